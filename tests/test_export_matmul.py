"""ONNX export with the Fourier transforms as matrix products (``--dft matmul``): the algebra
matches torch's FFTs, the graph holds no ``DFT`` operator, and both ONNX Runtime and OpenVINO
run it and match PyTorch on the tiny golden model and on a Big-LaMa-shaped one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import big_lama_shaped

from lama_model.accel.matmul_dft import DftMatrices, MatmulFourierUnit, with_matmul_dft
from lama_model.accel.onnx import CompositeGenerator, OnnxRuntimeModel, export_onnx
from lama_model.net.ffc import FourierUnit
from lama_model.weights.checkpoint import LamaModel, load_model
from lama_server.commands.export import main

TOLERANCE = 1e-3  # as for the DFT-operator export (tests/test_export.py)
TINY_SIZE = (64, 96)
BIG_SIZE = (96, 64)  # Fourier units at 12×8: an even and a non-power-of-two side


def sample(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, h, w, generator=gen)
    return image, (torch.rand(1, 1, h, w, generator=gen) > 0.5).float()


def composited(model: LamaModel, image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return (mask * model(image, mask) + (1 - mask) * image).numpy()


def openvino_output(path: Path, image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """The ONNX file read and compiled by OpenVINO on the CPU, in float32 (its CPU plug-in
    would pick bf16 by itself on CPUs that have it, and a test must not depend on that)."""
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (optional)")
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    return compiled({"image": image.numpy(), "mask": mask.numpy()})[0]


def onnxruntime_output(path: Path, image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    runtime = OnnxRuntimeModel(path, providers=["CPUExecutionProvider"])
    return runtime(image, mask).numpy()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LamaModel:
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def tiny_matmul_file(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made by the command line, over a file that was there (so ``--overwrite`` is exercised)."""
    path = tmp_path_factory.mktemp("matmul") / "tiny-64x96.onnx"
    path.write_bytes(b"an older file")
    size = "{}x{}".format(*TINY_SIZE)
    argv = [str(tiny_model_dir), "-o", str(path), "--dft", "matmul", "--size", size]
    assert main([*argv, "--overwrite"]) == 0
    return path


@pytest.fixture(scope="module")
def big_shaped() -> LamaModel:
    return big_lama_shaped(n_blocks=1)


@pytest.fixture(scope="module")
def big_matmul_file(big_shaped: LamaModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("matmul") / "big-shaped.onnx"
    return export_onnx(big_shaped, path, sample_size=BIG_SIZE, dft="matmul")


@pytest.mark.parametrize(("h", "w"), [(8, 8), (12, 8), (9, 7), (16, 30)])
def test_matrix_products_equal_torch_ortho_ffts(h: int, w: int) -> None:
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    matrices = DftMatrices(h, w)
    expected = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
    spectrum = matrices.rfft2(x)
    assert torch.allclose(spectrum[:, :, :h], expected.real, atol=1e-5)
    assert torch.allclose(spectrum[:, :, h:], expected.imag, atol=1e-5)
    # A spectrum that is not Hermitian along H (what a 1×1 conv makes): same as irfftn.
    noisy = torch.randn_like(spectrum)
    pairs = torch.complex(noisy[:, :, :h], noisy[:, :, h:])
    inverse = torch.fft.irfftn(pairs, s=(h, w), dim=(-2, -1), norm="ortho")
    assert torch.allclose(matrices.irfft2(noisy), inverse, atol=1e-5)


@pytest.mark.parametrize(("h", "w"), [(8, 12), (7, 9)])
def test_matmul_fourier_unit_keeps_the_interleaved_channel_order(h: int, w: int) -> None:
    torch.manual_seed(3)
    unit = FourierUnit(4, 4).eval()  # random 1×1 weights mix re/im: a wrong order shows
    with torch.no_grad():
        unit.bn.running_mean.normal_()
        unit.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 4, h, w)
    with torch.no_grad():
        assert torch.allclose(MatmulFourierUnit(unit, DftMatrices(h, w))(x), unit(x), atol=1e-4)


def test_with_matmul_dft_copies_and_fixes_the_size(tiny: LamaModel) -> None:
    module = CompositeGenerator(tiny.refine_generator).eval()
    image, mask = sample(*TINY_SIZE)
    converted = with_matmul_dft(module, image, mask)
    assert not any(isinstance(m, FourierUnit) for m in converted.modules())
    assert any(isinstance(m, FourierUnit) for m in module.modules())  # the original kept
    with torch.no_grad():
        assert torch.allclose(converted(image, mask), module(image, mask), atol=1e-5)
        with pytest.raises(ValueError, match="built for"):
            converted(*sample(72, 96))


def test_matmul_graph_has_no_dft_and_a_fixed_size(tiny_matmul_file: Path) -> None:
    graph = onnx.load(str(tiny_matmul_file))
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert "DFT" not in ops and "MatMul" in ops
    for tensor in graph.graph.input:
        dims = [d.dim_value for d in tensor.type.tensor_type.shape.dim]
        assert dims in ([1, 3, *TINY_SIZE], [1, 1, *TINY_SIZE])
    assert not list(tiny_matmul_file.parent.glob("*.partial"))  # the temporary was renamed
    assert not list(tiny_matmul_file.parent.glob(".*.partial"))


def test_tiny_matmul_export_runs_on_onnxruntime_and_openvino(
    tiny: LamaModel, tiny_matmul_file: Path
) -> None:
    image, mask = sample(*TINY_SIZE, seed=1)
    expected = composited(tiny, image, mask)
    assert np.abs(onnxruntime_output(tiny_matmul_file, image, mask) - expected).max() <= TOLERANCE
    assert np.abs(openvino_output(tiny_matmul_file, image, mask) - expected).max() <= TOLERANCE


def test_big_lama_shaped_matmul_export_runs_on_onnxruntime_and_openvino(
    big_shaped: LamaModel, big_matmul_file: Path
) -> None:
    image, mask = sample(*BIG_SIZE, seed=2)
    expected = composited(big_shaped, image, mask)
    hole = np.broadcast_to(mask.numpy() > 0, expected.shape)
    # The fill varies ten times the tolerance: not a saturated output that hides a wrong graph.
    assert expected[hole].std() > 10 * TOLERANCE
    assert np.abs(onnxruntime_output(big_matmul_file, image, mask) - expected).max() <= TOLERANCE
    assert np.abs(openvino_output(big_matmul_file, image, mask) - expected).max() <= TOLERANCE
    # The two Fourier units share one set of DFT matrices in the file.
    graph = onnx.load(str(big_matmul_file))
    square = [t for t in graph.graph.initializer if list(t.dims) == [2 * 12, 2 * 12]]
    assert len(square) == 2  # the forward and the inverse DFT along H, once each


def test_fixed_size_file_pads_smaller_inputs_and_refuses_larger(
    tiny: LamaModel, tiny_matmul_file: Path
) -> None:
    runtime = OnnxRuntimeModel(tiny_matmul_file, providers=["CPUExecutionProvider"])
    assert runtime.fixed_size == TINY_SIZE and "64×96 fixed" in runtime.description
    image, mask = sample(56, 80, seed=3)
    got = runtime(image, mask)
    assert got.shape == (1, 3, 56, 80)
    padded = torch.nn.functional.pad(image, (0, 16, 0, 8), mode="replicate")
    padded_mask = torch.nn.functional.pad(mask, (0, 16, 0, 8))
    expected = composited(tiny, padded, padded_mask)[..., :56, :80]
    assert np.abs(got.numpy() - expected).max() <= TOLERANCE
    with pytest.raises(ValueError, match="up to 64×96 pixels, got 64×104"):
        runtime(*sample(64, 104))


def test_export_keeps_an_existing_file_without_overwrite(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("kept.onnx", "kept.pt"):
        target = tmp_path / name
        target.write_bytes(b"the user's file")
        assert main([str(tiny_model_dir), "-o", str(target)]) == 2
        assert capsys.readouterr().err == (
            f"lama-inpaint export: {target} exists; give --overwrite to replace it\n"
        )
        assert target.read_bytes() == b"the user's file"


def test_export_command_rejects_bad_matmul_arguments(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "m.pt")
    assert main([str(tiny_model_dir), "-o", out, "--dft", "matmul"]) == 2
    assert "--dft matmul is an ONNX option" in capsys.readouterr().err
    for size in ("60", "64x", "8x64"):
        with pytest.raises(SystemExit):
            main([str(tiny_model_dir), "-o", str(tmp_path / "m.onnx"), "--size", size])
        assert "--size" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
