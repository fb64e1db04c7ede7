"""Fast inference paths (lama_model.accel.optimize) against the float32 eager reference.

Golden fixtures: the tiny official-weights model through the full inpaint pipeline must stay
within 1/255 of the official output and >= 40 dB on the hole. Random Big-LaMa-shaped weights
at small sizes check the same paths on the real architecture.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lama_model.accel.optimize import OptimizedModel, optimize
from lama_model.accel.precision import MIN_PSNR_DB, AutocastModel, PrecisionError
from lama_model.geometry import bucket_size, pad_symmetric
from lama_model.net.generator import build_generator
from lama_model.pipeline import OFFICIAL, inpaint
from lama_model.weights.checkpoint import LamaModel, load_model


def hole_psnr(expected: np.ndarray, got: np.ndarray, hole: np.ndarray) -> float:
    assert np.isfinite(got).all(), "NaN or inf in the output"
    mse = float(np.mean((expected[hole] - got[hole]) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LamaModel:
    return load_model(tiny_model_dir)


def load_case(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(folder / "image.png").convert("RGB"), dtype=np.float32) / 255
    mask = np.asarray(Image.open(folder / "mask.png").convert("L"))
    # The official path treats every mask value > 0 as a hole.
    mask = np.where(mask > 0, 255, 0).astype(np.uint8)
    return image, mask, np.load(folder / "expected.npy")


FAST_PATHS = {
    "fused": dict(fuse=True),
    "fused_bucket64": dict(fuse=True, bucket=64),
    "channels_last": dict(channels_last=True),
    "bucket64": dict(bucket=64),
    "bucket64_channels_last": dict(bucket=64, channels_last=True),
}


@pytest.mark.parametrize("case", ["case-a", "case-b"])
@pytest.mark.parametrize("path", sorted(FAST_PATHS))
def test_golden_cases_within_one_level(golden_dir: Path, case: str, path: str) -> None:
    image, mask, expected = load_case(golden_dir / case)
    fast = OptimizedModel(load_model(golden_dir / "tiny-lama"), **FAST_PATHS[path])
    got = inpaint(fast, image, mask, OFFICIAL).image
    hole = mask > 127
    assert np.abs(got - expected).max() <= 1 / 255
    assert hole_psnr(expected, got, hole) >= MIN_PSNR_DB
    assert np.array_equal(got[~hole], image[~hole])


def test_bucket_padding_changes_nothing_when_size_fits(tiny: LamaModel) -> None:
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 128, 64, generator=gen)
    mask = (torch.rand(1, 1, 128, 64, generator=gen) > 0.5).float()
    with torch.inference_mode():
        assert torch.equal(OptimizedModel(tiny, bucket=64)(image, mask), tiny(image, mask))


@pytest.fixture(scope="module")
def big_random() -> LamaModel:
    torch.manual_seed(0)
    net = build_generator("big-lama")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial BatchNorm so the test is not about identities
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
    return LamaModel(net, name="big-lama-random").eval()


@pytest.mark.parametrize("path", sorted(FAST_PATHS))
def test_big_lama_shape_fast_paths(big_random: LamaModel, path: str) -> None:
    gen = torch.Generator().manual_seed(4)
    image = torch.rand(1, 3, 72, 56, generator=gen)  # not a bucket multiple: exercises padding
    mask = torch.zeros(1, 1, 72, 56)
    mask[..., 16:48, 8:40] = 1
    options = dict(FAST_PATHS[path])
    if options.get("channels_last"):
        import copy

        fast = OptimizedModel(copy.deepcopy(big_random), **options)
    else:
        fast = OptimizedModel(big_random, **options)
    with torch.inference_mode():
        expected = big_random(image, mask)
        got = fast(image, mask)
    assert got.shape == expected.shape
    hole = mask[0, 0].bool()
    psnr = hole_psnr(expected[0, :, hole].numpy(), got[0, :, hole].numpy(), slice(None))
    assert psnr >= MIN_PSNR_DB


def test_bf16_autocast_runs_on_any_cpu(tiny: LamaModel) -> None:
    """bf16 works everywhere (emulated without AVX512-BF16/AMX); ``auto`` decides if it pays."""
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 64, 64, generator=gen)
    mask = (torch.rand(1, 1, 64, 64, generator=gen) > 0.5).float()
    with torch.inference_mode():
        got = OptimizedModel(tiny, precision="bf16")(image, mask)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()


def test_native_bf16_fused_model_casts_weights_once_and_stays_close(tiny: LamaModel) -> None:
    """The fused bf16 model holds bf16 weights (no autocast), the output layer float32."""
    gen = torch.Generator().manual_seed(6)
    image = torch.rand(1, 3, 64, 64, generator=gen)
    mask = (torch.rand(1, 1, 64, 64, generator=gen) > 0.5).float()
    fast = OptimizedModel(tiny, precision="bf16", fuse=True)
    with torch.inference_mode():
        expected, got = tiny(image, mask), fast(image, mask)
    assert fast.description == "bf16+fused"
    assert not isinstance(fast.inner, AutocastModel)
    stages = fast.inner.generator.stages
    assert all(b.dtype == torch.bfloat16 for st in stages[:-1] for b in st.buffers())
    assert all(b.dtype == torch.float32 for b in stages[-1].buffers())
    assert got.dtype == torch.float32
    assert hole_psnr(expected.numpy(), got.numpy(), slice(None)) >= MIN_PSNR_DB


@pytest.mark.parametrize("fuse", [False, True], ids=["autocast", "native-fused"])
def test_fourier_transforms_stay_float32_in_bf16(tiny: LamaModel, fuse: bool) -> None:
    seen: list[torch.dtype] = []
    original = torch.fft.rfftn

    def spy(x: torch.Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(x.dtype)
        return original(x, *args, **kwargs)

    fast = OptimizedModel(tiny, precision="bf16", fuse=fuse)
    torch.fft.rfftn = spy
    try:
        with torch.inference_mode():
            fast(torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32))
    finally:
        torch.fft.rfftn = original
    assert seen and all(dtype == torch.float32 for dtype in seen)


def test_optimize_on_cpu_keeps_interface(tiny: LamaModel, golden_dir: Path) -> None:
    fast = optimize(tiny, "cpu", precision="fp32")
    assert fast.device.type == "cpu" and fast.size_multiple == 8 and fast.name == tiny.name
    assert fast.description == "fp32+fused"
    assert optimize(tiny, "cpu", precision="fp32", fuse=False).description == "fp32"
    image, mask, expected = load_case(golden_dir / "case-b")
    got = inpaint(fast, image, mask, OFFICIAL).image
    assert np.abs(got - expected).max() <= 1 / 255


def test_gpu_only_options_are_refused_on_cpu(tiny: LamaModel) -> None:
    with pytest.raises(PrecisionError):
        OptimizedModel(tiny, precision="fp16")
    with pytest.raises(ValueError, match="CUDA"):
        OptimizedModel(tiny, cuda_graphs=True)
    with pytest.raises(ValueError, match="bucket"):
        OptimizedModel(tiny, bucket=60)
    with pytest.raises(ValueError, match="backend"):
        optimize(tiny, "cpu", backend="tensorrt")


@pytest.mark.parametrize(("h", "w", "bottom", "right"), [(5, 7, 3, 2), (3, 2, 7, 9), (4, 4, 0, 0)])
def test_pad_symmetric_matches_numpy(h: int, w: int, bottom: int, right: int) -> None:
    t = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    expected = np.pad(t[0, 0].numpy(), ((0, bottom), (0, right)), mode="symmetric")
    assert np.array_equal(pad_symmetric(t, bottom, right)[0, 0].numpy(), expected)
    assert bucket_size(h, 4) % 4 == 0 and 0 <= bucket_size(h, 4) - h < 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_paths_match_reference(big_random: LamaModel) -> None:  # pragma: no cover - GPU
    model = LamaModel(build_generator("big-lama"), name="cuda").cuda().eval()
    model.load_state_dict(big_random.state_dict())
    fast = optimize(model, "cuda")
    image = torch.rand(1, 3, 200, 136)
    mask = torch.zeros(1, 1, 200, 136)
    mask[..., 40:120, 30:90] = 1
    with torch.inference_mode():
        expected = model(image.cuda(), mask.cuda()).cpu()
        got = fast(image, mask)  # CPU in → pinned buffers → CPU out
    assert got.device.type == "cpu"
    hole = mask[0, 0].bool()
    assert hole_psnr(expected[0, :, hole].numpy(), got[0, :, hole].numpy(), slice(None)) >= 40
