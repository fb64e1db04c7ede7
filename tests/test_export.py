"""ONNX and TorchScript export of the tiny golden model: dynamic sizes, DFT op, reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from lama_model.accel.onnx import OnnxRuntimeModel, export_onnx, export_torchscript
from lama_model.accel.optimize import optimize
from lama_model.pipeline import OFFICIAL, inpaint
from lama_model.weights.checkpoint import LamaModel, load_model
from lama_server.commands.export import main

SIZES = [(64, 96), (160, 208)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LamaModel:
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def onnx_file(tiny: LamaModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tiny, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def composited(model: LamaModel, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return mask * model(image, mask) + (1 - mask) * image


def sample(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, h, w, generator=gen)
    return image, (torch.rand(1, 1, h, w, generator=gen) > 0.5).float()


def test_onnx_graph_uses_dft_and_dynamic_sizes(onnx_file: Path) -> None:
    graph = onnx.load(str(onnx_file))
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert "DFT" in ops
    opset = {entry.domain: entry.version for entry in graph.opset_import}
    assert opset[""] >= 17
    for tensor in graph.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_value for d in dims[:2]] in ([1, 3], [1, 1])
        assert dims[2].dim_param and dims[3].dim_param  # symbolic height and width


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_onnxruntime_matches_torch(tiny: LamaModel, onnx_file: Path, h: int, w: int) -> None:
    image, mask = sample(h, w)
    runtime = OnnxRuntimeModel(onnx_file, providers=["CPUExecutionProvider"])
    got = runtime(image, mask)
    assert got.shape == (1, 3, h, w)
    assert (got - composited(tiny, image, mask)).abs().max().item() <= 1e-3


def test_onnxruntime_backend_on_golden_case(
    tiny: LamaModel, onnx_file: Path, golden_dir: Path
) -> None:
    model = optimize(tiny, "cpu", backend="onnxruntime", onnx_path=onnx_file)
    assert isinstance(model, OnnxRuntimeModel) and model.size_multiple == 8
    folder = golden_dir / "case-a"
    image = np.asarray(Image.open(folder / "image.png").convert("RGB"), dtype=np.float32) / 255
    mask = np.asarray(Image.open(folder / "mask.png").convert("L"))
    mask = np.where(mask > 0, 255, 0).astype(np.uint8)
    got = inpaint(model, image, mask, OFFICIAL).image
    assert np.abs(got - np.load(folder / "expected.npy")).max() <= 1 / 255


def test_torchscript_roundtrip_through_load_model(tiny: LamaModel, tmp_path: Path) -> None:
    path = export_torchscript(tiny, tmp_path / "tiny.pt", sample_size=64)
    loaded = load_model(path, allow_torchscript=True)
    assert loaded.scripted
    for h, w in SIZES:
        image, mask = sample(h, w, seed=1)
        with torch.inference_mode():
            got = loaded(image, mask)
        assert (got - composited(tiny, image, mask)).abs().max().item() <= 1e-5


def test_torchscript_matches_official_trace(
    tiny: LamaModel, tmp_path: Path, golden_dir: Path
) -> None:
    """Our trace and the official ``to_jit.py`` trace of the same weights agree."""
    ours = load_model(
        export_torchscript(tiny, tmp_path / "ours.pt", sample_size=64), allow_torchscript=True
    )
    official = load_model(golden_dir / "tiny-lama.pt", allow_torchscript=True)
    image, mask = sample(96, 128, seed=2)
    with torch.inference_mode():
        assert (ours(image, mask) - official(image, mask)).abs().max().item() <= 1e-5


def test_cli_exports_torchscript(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.pt"
    assert main([str(tiny_model_dir), "-o", str(out), "--size", "64"]) == 0
    assert "torchscript" in capsys.readouterr().out
    assert load_model(out, allow_torchscript=True).scripted


def test_cli_reports_errors(
    tmp_path: Path, golden_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "missing"), "-o", str(tmp_path / "x.onnx")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main([str(tiny_model_dir), "-o", str(tmp_path / "x.onnx"), "--opset", "16"]) == 1
    assert "opset" in capsys.readouterr().err
    # A TorchScript file holds no eager generator to export.
    scripted = golden_dir / "tiny-lama.pt"
    assert main([str(scripted), "-o", str(tmp_path / "y.pt")]) == 1
    assert "TorchScript" in capsys.readouterr().err
