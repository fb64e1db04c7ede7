"""int8 calibration for the openvino backend (:mod:`lama_model.accel.int8_calibration`): the
project's min/max quantization against NNCF's, on the tiny model and on a two-convolution
graph whose ranges are known. Nothing here expects bf16 or a CPU's instruction set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lama_model.accel import int8_calibration
from lama_model.accel import precision as precision_module
from lama_model.accel.int8_calibration import CalibrationRecipe, quantize_int8
from lama_model.accel.precision import guard_input, psnr

ov = pytest.importorskip("openvino", reason="OpenVINO not installed: pip install -e '.[openvino]'")
QUICK = CalibrationRecipe(inputs=2, size=64)  # the tiny model's ranges settle on small inputs


def _served(graph, tiny_model):
    from lama_model.accel.openvino_runtime import OpenVinoModel

    return OpenVinoModel(graph, "tiny", "int8", tiny_model.refine_generator)


def _hole_psnr(tiny_model, served, size: int = 128) -> float:
    image, mask = guard_input(size, torch.device("cpu"))
    with torch.inference_mode():
        expected, got = tiny_model(image, mask), served(image, mask)
    hole = (mask > 0.5).expand_as(expected)
    return psnr(expected[hole], got[hole])


@pytest.mark.parametrize("method", ["minmax", "nncf"])
def test_minmax_and_nncf_int8_both_stay_within_the_guard_of_float32(
    tiny_model, tiny_openvino_graph, method
):
    if method == "nncf":
        pytest.importorskip("nncf", reason="NNCF not installed: pip install -e '.[test]'")
    recipe = CalibrationRecipe(method=method, inputs=QUICK.inputs, size=QUICK.size)
    quantized, seconds = quantize_int8(tiny_openvino_graph, recipe)
    quality = _hole_psnr(tiny_model, _served(quantized, tiny_model))
    assert precision_module.MIN_PSNR_DB <= quality < 200  # int8: close, but not float32
    assert seconds > 0


def test_the_minmax_graph_runs_every_convolution_in_int8(tiny_model, tiny_openvino_graph):
    from lama_model.accel.openvino_runtime import OpenVinoModel

    quantized, _ = quantize_int8(tiny_openvino_graph, QUICK)
    precisions = _served(quantized, tiny_model).layer_precisions()
    assert precisions and precisions <= {"u8", "i8"}  # not empty: convolutions were seen
    plain = OpenVinoModel(tiny_openvino_graph, "tiny", "fp32", tiny_model.refine_generator)
    assert plain.layer_precisions() == {"f32"}  # what the check sees without int8


def test_calibration_leaves_the_float32_graph_as_it_was(tiny_model, tiny_openvino_graph):
    before = [(op.get_type_name(), op.get_friendly_name()) for op in tiny_openvino_graph.get_ops()]
    shapes = [p.get_partial_shape() for p in tiny_openvino_graph.get_parameters()]
    quantize_int8(tiny_openvino_graph, QUICK)
    after = [(op.get_type_name(), op.get_friendly_name()) for op in tiny_openvino_graph.get_ops()]
    assert after == before
    assert [p.get_partial_shape() for p in tiny_openvino_graph.get_parameters()] == shapes
    assert not shapes[0].is_static  # still one graph for every size


def _two_convolutions() -> object:
    """image - 0.5 → conv → ReLU → conv, times the mask: one signed and one non-negative
    activation feeding a convolution."""
    from openvino import opset13 as ops

    image = ops.parameter([1, 3, -1, -1], np.float32, name="image")
    mask = ops.parameter([1, 1, -1, -1], np.float32, name="mask")
    rng = np.random.default_rng(0)
    centred = ops.subtract(image, ops.constant(np.float32(0.5)))
    first = ops.convolution(centred, ops.constant(rng.normal(size=(8, 3, 3, 3)).astype(np.float32)),
                            [1, 1], [1, 1], [1, 1], [1, 1])  # fmt: skip
    second = ops.convolution(ops.relu(first),
                             ops.constant(rng.normal(size=(3, 8, 1, 1)).astype(np.float32)),
                             [1, 1], [0, 0], [0, 0], [1, 1])  # fmt: skip
    return ov.Model([ops.multiply(second, mask)], [image, mask], "two convolutions")


def _fake_quantize_ranges(model) -> list[tuple[float, float]]:
    ranges = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            low, high = (op.input(i).get_source_output().get_node().get_data() for i in (1, 2))
            ranges.append((float(low), float(high)))
    return ranges


def test_signed_activations_get_a_symmetric_range_and_relu_outputs_an_unsigned_one():
    quantized, _ = quantize_int8(_two_convolutions(), CalibrationRecipe(inputs=2, size=32))
    (signed_low, signed_high), (relu_low, relu_high) = _fake_quantize_ranges(quantized)
    # image - 0.5 spans about [-0.5, 0.5]: int8's [-128, 127] steps around zero
    assert -0.55 < signed_low < -0.4 and signed_high == pytest.approx(-signed_low * 127 / 128)
    assert relu_low == 0 and relu_high > 0
    weights = [op for op in quantized.get_ops()
               if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    assert len(weights) == 2  # both convolutions' weights stored as int8


def test_a_change_of_recipe_never_reuses_a_cached_int8_graph(tiny_model, tmp_path, monkeypatch):
    from lama_model.accel.openvino_runtime import openvino_model

    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(int8_calibration, "RECIPE", QUICK)
    openvino_model(tiny_model, "int8")
    monkeypatch.setattr(int8_calibration, "RECIPE", CalibrationRecipe(inputs=3, size=64))
    openvino_model(tiny_model, "int8")
    graphs = sorted(p.name for p in (tmp_path / "openvino").glob("*-int8-*.xml"))
    assert len(graphs) == 2, graphs
    assert any(QUICK.tag in name for name in graphs) and any("3x64" in name for name in graphs)
    openvino_model(tiny_model, "int8")  # the recipe of a cached graph: read, not rebuilt
    assert len(list((tmp_path / "openvino").glob("*-int8-*.xml"))) == 2


def test_an_unknown_calibration_method_is_refused_in_one_line(tiny_openvino_graph):
    with pytest.raises(ValueError, match="calibration method must be one of minmax, nncf"):
        quantize_int8(tiny_openvino_graph, CalibrationRecipe(method="kmeans"))


INT8_WITHOUT_NNCF = """
import json, sys, torch
sys.modules["nncf"] = None  # importing NNCF now fails, as where it is not installed
from lama_model.accel.openvino_runtime import openvino_model
from lama_model.weights.checkpoint import load_model
served = openvino_model(load_model(sys.argv[1], torch.device("cpu")), "int8", cache=False)
print(json.dumps(sorted(served.layer_precisions())))
"""


def test_the_openvino_extra_runs_int8_without_nncf(tiny_model_dir):
    """The ``openvino`` extra no longer installs NNCF: the backend's int8 must not need it."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", INT8_WITHOUT_NNCF, str(tiny_model_dir)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    precisions = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert precisions and precisions <= {"u8", "i8"}
