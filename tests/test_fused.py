"""The fused inference rewrite (lama_model.accel.fused) and its Winograd kernels (lama_model.accel.winograd).

The rewrite must compute the same function as the eager generator (to float32 rounding), on
the golden tiny checkpoint and on Big-LaMa-shaped random weights, at sizes whose bottleneck
is not a whole number of Winograd tiles.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import randomise_batchnorm
from hypothesis import given, settings
from hypothesis import strategies as st

from lama_model.accel import winograd
from lama_model.accel.fused import (
    FusedBottleneck,
    bn_scale_shift,
    fuse_generator,
    reflect_pad,
)
from lama_model.accel.optimize import fused_model
from lama_model.net.generator import LamaConfig, build_generator
from lama_model.weights.checkpoint import load_model


@pytest.fixture(scope="module")
def small_big_lama() -> torch.nn.Module:
    """Big LaMa's layer pattern with 4 blocks (fast enough for many sizes)."""
    torch.manual_seed(0)
    net = build_generator(LamaConfig(n_blocks=4))
    randomise_batchnorm(net)
    return net


def bottleneck_output(generator: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The eager generator's concatenated features after the residual blocks."""
    layers = list(generator.model)
    concat = next(i for i, m in enumerate(layers) if type(m).__name__ == "ConcatTupleLayer")
    return torch.nn.Sequential(*layers[: concat + 1])(x)


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(2, 21),
    width=st.integers(2, 21),
    channels=st.integers(1, 9),
    out_channels=st.integers(1, 7),
    batch=st.integers(1, 2),
)
def test_winograd_conv_matches_direct_convolution(
    height: int, width: int, channels: int, out_channels: int, batch: int
) -> None:
    gen = torch.Generator().manual_seed(height * 100 + width)
    x = torch.randn(batch, channels, height, width, generator=gen)
    weight = torch.randn(out_channels, channels, 3, 3, generator=gen)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight)
    padded = winograd.pad_reflect_for_tiles(x.permute(0, 2, 3, 1).contiguous())
    got = winograd.conv3x3(padded, winograd.transform_weight(weight), height, width)
    scale = expected.abs().max().item() + 1e-6
    assert torch.allclose(got.permute(0, 3, 1, 2), expected, atol=2e-5 * scale, rtol=0)


def test_winograd_refuses_other_kernel_sizes() -> None:
    with pytest.raises(ValueError, match="3×3"):
        winograd.transform_weight(torch.zeros(4, 4, 5, 5))
    with pytest.raises(ValueError, match="2×2"):
        winograd.pad_reflect_for_tiles(torch.zeros(1, 1, 5, 3))


@pytest.mark.parametrize(("height", "width"), [(4, 4), (5, 3), (9, 16)])
def test_reflect_pad_matches_torch(height: int, width: int) -> None:
    x = torch.randn(2, 3, height, width).contiguous(memory_format=torch.channels_last)
    for pad in (1, 2, 3):
        if pad < min(height, width):
            assert torch.equal(reflect_pad(x, pad), F.pad(x, (pad,) * 4, mode="reflect"))


def test_batchnorm_folding_is_the_same_affine_map() -> None:
    bn = torch.nn.BatchNorm2d(5).eval()
    randomise_batchnorm(bn, seed=7)
    y = torch.randn(2, 5, 3, 3)
    scale, shift = bn_scale_shift(bn)
    folded = y * scale.float().view(1, -1, 1, 1) + shift.float().view(1, -1, 1, 1)
    assert torch.allclose(bn(y), folded, atol=1e-6)


@pytest.mark.parametrize("winograd_blocks", [True, False], ids=["winograd", "generic"])
@pytest.mark.parametrize(("height", "width"), [(64, 64), (72, 56), (136, 24)])
def test_fused_generator_matches_eager(
    small_big_lama: torch.nn.Module, winograd_blocks: bool, height: int, width: int
) -> None:
    """Bottlenecks of 8×8, 9×7 and 17×3: whole tiles, cropped tiles, a thin strip."""
    gen = torch.Generator().manual_seed(height + width)
    x = torch.rand(2, 4, height, width, generator=gen)
    x[:, 3] = (x[:, 3] > 0.5).float()
    fused = fuse_generator(small_big_lama, winograd=winograd_blocks)
    bottleneck = next(s for s in fused.stages if isinstance(s, FusedBottleneck))
    assert bottleneck.winograd is winograd_blocks
    with torch.inference_mode():
        expected, got = small_big_lama(x), fused(x)
        # The output passes a sigmoid; compare the features before it too.
        feats = bottleneck_output(small_big_lama, x)
        state = x.contiguous(memory_format=torch.channels_last)
        for stage in fused.stages:
            state = stage(state)
            if stage is bottleneck:
                break
    assert got.shape == expected.shape and got.is_contiguous()
    assert (got - expected).abs().max().item() < 1e-5
    relative = ((state - feats).abs().max() / feats.abs().max()).item()
    assert relative < 1e-5


def test_fusing_leaves_the_source_generator_unchanged(small_big_lama: torch.nn.Module) -> None:
    before = {k: v.clone() for k, v in small_big_lama.state_dict().items()}
    fuse_generator(small_big_lama)
    after = small_big_lama.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_winograd_model_refuses_autocast_with_a_clear_error(
    small_big_lama: torch.nn.Module,
) -> None:
    fused = fuse_generator(small_big_lama, winograd=True)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match="winograd=False"):
            fused(torch.rand(1, 4, 64, 64))


def test_fusing_refuses_foreign_layouts_and_torchscript(
    small_big_lama: torch.nn.Module, golden_dir: Path
) -> None:
    import copy

    broken = copy.deepcopy(small_big_lama)
    concat = next(i for i, m in enumerate(broken.model) if type(m).__name__ == "ConcatTupleLayer")
    del broken.model[concat]
    with pytest.raises(ValueError, match="cannot fuse"):
        fuse_generator(broken)
    scripted = load_model(golden_dir / "tiny-lama.pt", allow_torchscript=True)
    with pytest.raises(ValueError, match="TorchScript"):
        fused_model(scripted)


def test_native_bf16_fused_generator_stays_within_the_guard(
    small_big_lama: torch.nn.Module,
) -> None:
    """bf16 weights cast once, generic blocks (Winograd is float32 only), float32 output."""
    import math

    fused = fuse_generator(small_big_lama, dtype=torch.bfloat16)
    bottleneck = next(s for s in fused.stages if isinstance(s, FusedBottleneck))
    assert not bottleneck.winograd
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(1, 4, 72, 56, generator=gen)
    x[:, 3] = (x[:, 3] > 0.5).float()
    with torch.inference_mode():
        expected, got = small_big_lama(x), fused(x)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    mse = torch.mean((got - expected) ** 2).item()
    assert 10 * math.log10(1 / mse) >= 40
    with pytest.raises(ValueError, match="float32 only"):
        fuse_generator(small_big_lama, winograd=True, dtype=torch.bfloat16)
