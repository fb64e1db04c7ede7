"""int8 post-training quantization of an OpenVINO model, calibrated on the loaded weights with
synthetic photo-like inputs.

The quantized graph is written in OpenVINO's own terms, and OpenVINO's CPU plug-in does the
rest (its low-precision transformations turn the pattern into int8 convolutions):

- every convolution's activation input gets a ``FakeQuantize`` (per tensor, 256 levels:
  ``[0, max]`` when the calibration never saw a negative value, else symmetric around 0),
  placed before the reflect ``Pad`` that feeds it, so the padding runs on int8 data too;
- its weights become int8 constants, ``Convert`` and a per-output-channel scale (symmetric,
  -127..127), the form NNCF also writes;
- the Fourier transforms and the element-wise operations stay float32.

The ranges are the min and max the activations reach on :data:`CALIBRATION_INPUTS` seeded
inputs of :data:`CALIBRATION_SIZE`², read from ``ReduceMin``/``ReduceMax`` outputs added to
one statically shaped copy of the graph: one compile and a few inferences. Calibrating on the
loaded weights (not on a reference model) matters: the ranges are the checkpoint's own.

Why not NNCF's ``nncf.quantize`` (the reference, :func:`quantize_int8_nncf`): on Big LaMa
(3929 OpenVINO operations, 222 convolutions, 2 busy cores of an AVX2 EPYC) it took 24-39 s,
most of it NNCF's own set-up in Python (pattern matching of its hardware fusions, 11 s;
compiling its statistics graph with dynamic shapes, 10 s; quantizer propagation, 4 s),
where this takes 6 s. In the same interleaved run at 512² both int8 graphs ran as fast as
each other (best rounds 2.15 s and 2.14 s, fp32+fused torch 2.13 s), and this one kept more
of float32 on the hole (54.9 dB against NNCF's 51.4 dB). NNCF also quantizes the inputs of
the residual additions; doing the same here measured no faster (2.19 s) and lower (52 dB).

Synthetic inputs are enough for ranges: a smooth random field plus noise spans the dynamic
range of photos, and the hole (a box, as users paint) exercises the mask channel.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

CALIBRATION_SIZE = 256  # the activations' ranges do not depend on the size; 256² keeps it quick
CALIBRATION_INPUTS = 4  # 4 gave 51-55 dB on Big LaMa's hole; more costs start-up
# What minmax quantizes; its recipe tag says "conv": quantizing more must change the tag.
QUANTIZED_OPS = ("Convolution", "ConvolutionBackpropData")
# Axis of the output channels in each operation's weights (OpenVINO's layouts).
OUTPUT_CHANNEL_AXIS = {"Convolution": 0, "ConvolutionBackpropData": 1}


@dataclasses.dataclass(frozen=True)
class CalibrationRecipe:
    """What decides the quantized graph besides the weights: ``method`` (``minmax``, this
    module's; ``nncf``, NNCF's post-training quantization without bias correction), the number
    and size of the calibration inputs. :attr:`tag` names it in the cached graph's file, so a
    graph made by another recipe is never reused."""

    method: str = "minmax"
    inputs: int = CALIBRATION_INPUTS
    size: int = CALIBRATION_SIZE

    @property
    def tag(self) -> str:
        """e.g. ``minmax-conv-4x256`` (``nncf-nobc-4x256`` for NNCF's)."""
        kind = "conv" if self.method == "minmax" else "nobc"
        return f"{self.method}-{kind}-{self.inputs}x{self.size}"


RECIPE = CalibrationRecipe()  # what the openvino backend uses (a bench may set another)
METHODS = ("minmax", "nncf")


def calibration_inputs(
    count: int = CALIBRATION_INPUTS, size: int = CALIBRATION_SIZE
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` seeded (image[1,3,size,size], mask[1,1,size,size]) float32 pairs."""
    inputs = []
    for seed in range(count):
        gen = torch.Generator().manual_seed(1000 + seed)
        low = torch.rand(1, 3, size // 32, size // 32, generator=gen)
        image = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        image = (image + 0.05 * torch.randn(1, 3, size, size, generator=gen)).clamp(0, 1)
        mask = torch.zeros(1, 1, size, size)
        side = size // 3
        y, x = torch.randint(0, size - side, (2,), generator=gen).tolist()
        mask[..., y : y + side, x : x + side] = 1
        inputs.append((image.numpy(), mask.numpy()))
    return inputs


def quantize_int8(model: object, recipe: CalibrationRecipe | None = None) -> tuple[object, float]:
    """A copy of ``model`` (an ``openvino.Model`` of the composite generator, inputs image and
    mask) with int8 convolutions, and the seconds calibration took; ``recipe`` defaults to
    :data:`RECIPE`. ``model`` itself is left as it was."""
    recipe = recipe or RECIPE
    if recipe.method not in METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}")
    start = time.perf_counter()
    inputs = calibration_inputs(recipe.inputs, recipe.size)
    if recipe.method == "nncf":
        return quantize_int8_nncf(model, inputs), time.perf_counter() - start
    quantized = model.clone()  # type: ignore[attr-defined]
    points = activation_points(quantized)
    ranges = activation_ranges(quantized, [source for source, _ in points], inputs)
    for (source, targets), (low, high) in zip(points, ranges, strict=True):
        insert_fake_quantize(source, targets, low, high)
    for op in quantized.get_ordered_ops():
        if op.get_type_name() in QUANTIZED_OPS:
            quantize_weights(op)
    quantized.validate_nodes_and_infer_types()
    return quantized, time.perf_counter() - start


def quantize_int8_nncf(model: object, inputs: list[tuple[np.ndarray, np.ndarray]]) -> object:
    """NNCF's post-training quantization of ``model`` on ``inputs`` (the reference the test
    suite holds :func:`quantize_int8` against). Needs NNCF: the ``test`` extra installs it,
    the ``openvino`` extra no longer does."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    dataset = nncf.Dataset(inputs, lambda pair: {0: pair[0], 1: pair[1]})
    # No bias correction: on Big LaMa (seeded weights) it gave the same 53.4 dB on the hole as
    # without, and cost 78 per-layer compiles and runs (a fifth to a third of calibration).
    return nncf.quantize(
        model, dataset, subset_size=len(inputs),
        advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True),
    )  # fmt: skip


def activation_points(model: object) -> list[tuple[object, list[object]]]:
    """Where activations are quantized: each distinct tensor that feeds a convolution (the
    input of a ``Pad`` that feeds only that convolution), with the inputs that read it."""
    points: dict[tuple[str, int], tuple[object, list[object]]] = {}
    for op in model.get_ordered_ops():  # type: ignore[attr-defined]
        if op.get_type_name() not in QUANTIZED_OPS or not _constant_weights(op):
            continue
        target = op.input(0)
        source = target.get_source_output()
        pad = source.get_node()
        if pad.get_type_name() == "Pad" and len(source.get_target_inputs()) == 1:
            target = pad.input(0)
            source = target.get_source_output()
        key = (source.get_node().get_friendly_name(), source.get_index())
        points.setdefault(key, (source, []))[1].append(target)
    return list(points.values())


def activation_ranges(
    model: object, sources: list[object], inputs: list[tuple[np.ndarray, np.ndarray]]
) -> list[tuple[float, float]]:
    """The (min, max) each of ``sources`` (outputs inside ``model``) reaches on ``inputs``.

    A graph of ``model``'s parameters and one ReduceMin and ReduceMax per source is compiled
    for the inputs' static shape (NNCF's dynamically shaped statistics graph took 10 s to
    compile on Big LaMa, this 1.5-4 s); ``model``'s own shapes are put back afterwards."""
    import openvino as ov
    from openvino import opset13 as ops

    parameters = model.get_parameters()  # type: ignore[attr-defined]
    shapes = {index: p.get_partial_shape() for index, p in enumerate(parameters)}
    axes = ops.constant(np.arange(4, dtype=np.int64))
    outputs = []
    for source in sources:
        outputs += [ops.reduce_min(source, axes, False).output(0),
                    ops.reduce_max(source, axes, False).output(0)]  # fmt: skip
    statistics = ov.Model(outputs, parameters, "calibration statistics")
    try:
        statistics.reshape({index: list(array.shape) for index, array in enumerate(inputs[0])})
        config = {"INFERENCE_PRECISION_HINT": "f32",  # ranges of the float32 graph
                  "INFERENCE_NUM_THREADS": torch.get_num_threads()}  # fmt: skip
        request = ov.Core().compile_model(statistics, "CPU", config).create_infer_request()
        low = np.full(len(sources), np.inf)
        high = np.full(len(sources), -np.inf)
        for image, mask in inputs:
            result = request.infer({0: image, 1: mask})
            values = np.array([float(result[i]) for i in range(len(outputs))]).reshape(-1, 2)
            low, high = np.minimum(low, values[:, 0]), np.maximum(high, values[:, 1])
    finally:
        statistics.reshape(shapes)  # the parameters are model's own
    return list(zip(low.tolist(), high.tolist(), strict=True))


def insert_fake_quantize(source: object, targets: list[object], low: float, high: float) -> None:
    """Route ``source`` to ``targets`` through a 256-level FakeQuantize over its range:
    ``[0, high]`` for a tensor never negative (after a ReLU), else symmetric as int8 is."""
    from openvino import opset13 as ops

    if low >= 0:
        low = 0.0
    else:
        bound = max(-low, high)
        low, high = -bound, bound * 127 / 128
    if high <= low:  # a constant activation (all zero): any non-empty range represents it
        high = low + 1.0
    fake = ops.fake_quantize(source, *[ops.constant(np.float32(v)) for v in (low, high) * 2], 256)
    for target in targets:
        target.replace_source_output(fake.output(0))


def quantize_weights(op: object) -> None:
    """Replace ``op``'s float weights by int8 constants times a per-output-channel scale."""
    import openvino as ov
    from openvino import opset13 as ops

    if not _constant_weights(op):
        return
    weights = op.input(1).get_source_output().get_node().get_data().astype(np.float32)
    axis = OUTPUT_CHANNEL_AXIS[op.get_type_name()]
    others = tuple(a for a in range(weights.ndim) if a != axis)
    scale = np.abs(weights).max(axis=others, keepdims=True) / 127
    scale[scale == 0] = 1.0  # an all-zero channel: zeros either way
    levels = np.clip(np.round(weights / scale), -127, 127).astype(np.int8)
    dequantized = ops.multiply(ops.convert(ops.constant(levels), ov.Type.f32),
                               ops.constant(scale.astype(np.float32)))  # fmt: skip
    op.input(1).replace_source_output(dequantized.output(0))


def _constant_weights(op: object) -> bool:
    weights = op.input(1).get_source_output().get_node()  # type: ignore[attr-defined]
    return weights.get_type_name() == "Constant"


__all__ = [
    "CALIBRATION_INPUTS",
    "CALIBRATION_SIZE",
    "METHODS",
    "RECIPE",
    "CalibrationRecipe",
    "activation_points",
    "activation_ranges",
    "calibration_inputs",
    "insert_fake_quantize",
    "quantize_int8",
    "quantize_int8_nncf",
    "quantize_weights",
]
