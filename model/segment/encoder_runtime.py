"""Which runtime runs the segmenter's image encoder: torch, or OpenVINO (float32) on a CPU.

SAM pads every image to one square input (1024² for MobileSAM), so the encoder has a single
static shape: it converts once to an OpenVINO graph of that shape, kept as verified IR in
the model cache (:mod:`lama_model.accel.openvino_ir_cache`, the same cache as the generator's
``--backend openvino``), keyed by the weights' digest and :data:`ENCODER_GRAPH`. On the
2-core AVX2 machine this was written on, OpenVINO ran MobileSAM's encoder 1.02 to 1.34
times as fast as the torch path (about 1.18 in most runs; interleaved, 2 threads, the
machine busy), and 1.22 to 1.48 times since graph 2 (the same machine, shared with one
other job);
``bench/segment.py --runtimes torch,openvino`` measures it here.

``auto`` (the default) takes OpenVINO on a CPU when it is installed (the ``openvino`` extra)
and ``LAMA_AUTO_BACKENDS`` allows it, else torch. A conversion is checked against the torch
encoder on a seeded input before it is used or cached: features within
:data:`OPENVINO_MAX_RELATIVE_ERROR` (float32 round-off), else torch runs and the segmenter's
description says why.

No int8 path: NNCF's int8 encoder (weights and activations) ran no faster than OpenVINO's
float32 one on that CPU (AVX2 without VNNI has no fast int8 product), with a 30 % relative
error of the features on seeded weights.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Protocol

import numpy as np
import torch
from torch import nn

from lama_model.accel.openvino_ir_cache import cached_ir, weights_digest
from lama_model.accel.openvino_runtime import ir_path, require_openvino
from lama_model.accel.optimize import auto_allows
from lama_model.errors import BackendError, one_line

log = logging.getLogger(__name__)

ENCODER_RUNTIMES = ("auto", "torch", "openvino")
# The traced formulation of the encoder, in the cached IR's name: a change to how
# :mod:`.net.tiny_vit` writes the encoder (the same features, another graph) bumps it, so
# that a graph cached by an older version is converted again rather than kept. 2: the
# attention's q, k and v as three projections, the local convolution on permuted tokens.
ENCODER_GRAPH = 2
# ‖OpenVINO − torch‖ / ‖torch‖ on the seeded check input: float32 round-off is about 1e-6;
# a conversion that computes something else is off by 1e-2 or more.
OPENVINO_MAX_RELATIVE_ERROR = 1e-4


class ImageEncoder(Protocol):
    """The role the predictor runs per image: normalised, padded (1, 3, S, S) float32 on the
    segmenter's device → features (1, C, S/16, S/16), without autograd."""

    runtime: str  # what runs it, for the segmenter's description: "torch", "openvino fp32"

    def __call__(self, image: torch.Tensor) -> torch.Tensor: ...


class TorchImageEncoder:
    """The encoder module itself (its fused CPU paths, see :mod:`.net.tiny_vit`)."""

    def __init__(self, encoder: nn.Module, runtime: str = "torch") -> None:
        self.encoder = encoder
        self.runtime = runtime

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.encoder(image)


class OpenVinoImageEncoder:
    """A compiled OpenVINO graph of the encoder (CPU, float32, one static input shape)."""

    runtime = "openvino fp32"

    def __init__(self, ov_model: object, threads: int | None = None) -> None:
        import openvino as ov

        config = {
            # float32 on every CPU: OpenVINO would otherwise run bf16 where the CPU has it,
            # and the features would depend on a CPU flag.
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        compiled = ov.Core().compile_model(ov_model, "CPU", config)
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one image at a time

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        feed = image.detach().float().cpu().contiguous().numpy()
        with self._lock:
            out = np.array(self._request.infer({0: feed})[0], copy=True)
        return torch.from_numpy(out)


def check_input(size: int) -> torch.Tensor:
    """The seeded normalised image a conversion is checked on: (1, 3, size, size)."""
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    """‖result − reference‖ / ‖reference‖."""
    return float((result - reference).norm() / reference.norm().clamp_min(1e-12))


def convert_encoder(encoder: nn.Module, size: int) -> object:
    """The ``openvino.Model`` of ``encoder`` for a (1, 3, size, size) input.

    Traced with autograd on, so that the encoder takes its plain operators (its fused oneDNN
    ones and the banded first stage are for torch inference only) and OpenVINO fuses and
    schedules the graph itself."""
    import openvino as ov

    example = check_input(size)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer deprecation warnings
        traced = torch.jit.trace(encoder, (example,), check_trace=False)
        model = ov.convert_model(traced, example_input=(example,))
    model.reshape({0: ov.PartialShape([1, 3, size, size])})
    return model


def checked_conversion(encoder: nn.Module, size: int) -> object:
    """:func:`convert_encoder`, raising :class:`BackendError` unless the compiled graph gives
    the torch encoder's features on :func:`check_input` (see the module docstring)."""
    model = convert_encoder(encoder, size)
    example = check_input(size)
    with torch.inference_mode():
        reference = encoder(example.contiguous(memory_format=torch.channels_last))
    error = relative_error(OpenVinoImageEncoder(model)(example), reference)
    if not error <= OPENVINO_MAX_RELATIVE_ERROR:  # NaN fails too
        raise BackendError(
            f"OpenVINO's encoder differs from torch's (relative error {error:.1e} > "
            f"{OPENVINO_MAX_RELATIVE_ERROR:.0e})"
        )
    log.info("OpenVINO encoder checked against torch: relative error %.1e", error)
    return model


def openvino_encoder(encoder: nn.Module, name: str, size: int) -> OpenVinoImageEncoder:
    """``encoder`` (on the CPU, in evaluation mode, batch norms folded) on OpenVINO; its
    checked conversion cached as IR under the model cache. Raises :class:`BackendError`."""
    version = require_openvino()
    digest = weights_digest(encoder.state_dict())
    xml = ir_path(f"{name}-encoder{ENCODER_GRAPH}-{size}", digest, "fp32", version)

    def build() -> object:
        log.info("converting the %s encoder to OpenVINO (once: cached under the model cache)", name)
        return checked_conversion(encoder, size)

    graph, reused = cached_ir(xml, build)
    if reused:
        log.info("OpenVINO graph of the %s encoder read from the cache", name)
    return OpenVinoImageEncoder(graph)


def image_encoder(
    encoder: nn.Module, name: str, size: int, device: torch.device, runtime: str = "auto"
) -> ImageEncoder:
    """The runtime ``runtime`` (one of :data:`ENCODER_RUNTIMES`) for ``encoder``.

    ``openvino`` raises :class:`BackendError` where it cannot run (not installed, not a CPU,
    a conversion that fails its check); ``auto`` then runs torch, its ``runtime`` saying why."""
    if runtime not in ENCODER_RUNTIMES:
        raise BackendError(f"encoder runtime {runtime!r}: one of {', '.join(ENCODER_RUNTIMES)}")
    if runtime == "torch":
        return TorchImageEncoder(encoder)
    if runtime == "auto":
        if device.type != "cpu" or not auto_allows("openvino"):
            return TorchImageEncoder(encoder)
        try:
            require_openvino()
        except BackendError:
            return TorchImageEncoder(encoder, "torch (openvino not installed)")
    try:
        if device.type != "cpu":
            raise BackendError(f"OpenVINO runs the encoder on the CPU, not on {device.type}")
        return openvino_encoder(encoder, name, size)
    # Any failure, not only ours: OpenVINO's conversion and compilation raise their own
    # exception types, and ``auto`` must still serve (with torch) and say why.
    except Exception as exc:
        reason = str(exc) if isinstance(exc, BackendError) else one_line(exc)
        if runtime == "openvino":
            raise BackendError(f"the openvino encoder: {reason}") from exc
        log.warning("segmenter encoder on torch, not OpenVINO: %s", reason)
        return TorchImageEncoder(encoder, f"torch ({reason})")


__all__ = [
    "ENCODER_RUNTIMES",
    "ImageEncoder",
    "OPENVINO_MAX_RELATIVE_ERROR",
    "OpenVinoImageEncoder",
    "TorchImageEncoder",
    "checked_conversion",
    "convert_encoder",
    "image_encoder",
    "openvino_encoder",
]
