"""The inpainting path: official equivalence, our improvements, formats, strategies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lama_model.pipeline import OFFICIAL, InpaintOptions, inpaint
from lama_model.weights.checkpoint import load_model


class ConstantModel(torch.nn.Module):
    """Fills with one colour and records the window sizes it was given."""

    size_multiple = 8

    def __init__(self, colour=(0.5, 0.25, 0.75)):
        super().__init__()
        self.colour = torch.tensor(colour).view(1, 3, 1, 1)
        self.calls: list[tuple[int, int]] = []

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, image, mask):
        self.calls.append(tuple(image.shape[-2:]))
        return self.colour.expand(image.shape[0], 3, *image.shape[-2:]).clone()


def _case(golden_dir, name):
    image = np.asarray(Image.open(golden_dir / name / "image.png").convert("RGB"))
    mask = np.asarray(Image.open(golden_dir / name / "mask.png").convert("L"))
    return image, mask, np.load(golden_dir / name / "expected.npy")


@pytest.mark.parametrize("source", ["tiny-lama", "tiny-lama.pt"])
@pytest.mark.parametrize("case", ["case-a", "case-b"])
def test_float_api_matches_official_output(golden_dir, source, case):
    image, mask, expected = _case(golden_dir, case)
    model = load_model(golden_dir / source, allow_torchscript=True)
    result = inpaint(model, image.astype(np.float32) / 255, mask, OFFICIAL)
    assert result.image.dtype == np.float32
    np.testing.assert_allclose(result.image, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["case-a", "case-b"])
def test_uint8_path_rounds_and_keeps_outside_pixels(golden_dir, tiny_model_dir, case):
    image, mask, expected = _case(golden_dir, case)
    result = inpaint(load_model(tiny_model_dir), image, mask, OFFICIAL).image
    assert np.abs(result.astype(np.float64) - expected * 255).max() <= 0.5 + 1e-3
    outside = mask == 0
    np.testing.assert_array_equal(result[outside], image[outside])


def test_rounding_not_truncation():
    """0.5 + 0.4/255 must become 128, not the truncated 127 (the grey tint)."""
    value = (127.9 / 255, 127.9 / 255, 127.9 / 255)
    image = np.zeros((16, 16, 3), np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    out = inpaint(ConstantModel(value), image, mask, OFFICIAL).image
    assert (out[4:12, 4:12] == 128).all()


def test_grow_and_feather_blend_then_leave_the_rest_bit_identical():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[28:36, 28:36] = 255
    res = inpaint(ConstantModel(), image, mask, InpaintOptions(mask_grow=3, feather=4))
    alpha = res.alpha
    assert (alpha[mask > 0] == 1).all()
    assert alpha[25, 32] == 1.0  # 3 px grown: fully replaced
    assert 0 < alpha[27 - 3 - 1, 32] < 1  # in the feather ring
    far = alpha == 0
    assert far.sum() > 0 and (alpha[:20] == 0).all()
    np.testing.assert_array_equal(res.image[far], image[far])
    fill = np.array([128, 64, 191])
    np.testing.assert_array_equal(
        res.image[alpha == 1], np.broadcast_to(fill, (int((alpha == 1).sum()), 3))
    )
    # Feathered pixels lie between the input and the fill.
    ring = (alpha > 0) & (alpha < 1)
    lo = np.minimum(image[ring], fill)
    hi = np.maximum(image[ring], fill)
    assert ((res.image[ring] >= lo) & (res.image[ring] <= hi)).all()


def test_soft_mask_values_blend_partially():
    image = np.full((32, 32, 3), 200, np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[10:20, 10:20] = 64  # a soft selection edge, below the hole threshold
    res = inpaint(
        ConstantModel((0.0, 0.0, 0.0)), image, mask, InpaintOptions(mask_grow=0, feather=0)
    )
    assert res.alpha[15, 15] == pytest.approx(64 / 255)
    assert res.image[15, 15, 0] == round(200 * (1 - 64 / 255))


def test_empty_mask_returns_input_without_running_the_model():
    model = ConstantModel()
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    res = inpaint(model, image, np.zeros((4, 4), np.uint8))
    np.testing.assert_array_equal(res.image, image)
    assert model.calls == [] and not res.alpha.any()


def _square_mask(h, w, y, x, s):
    mask = np.zeros((h, w), np.uint8)
    mask[y : y + s, x : x + s] = 255
    return mask


def test_rgba_alpha_channel_is_preserved():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    res = inpaint(ConstantModel(), image, _square_mask(32, 32, 8, 8, 8))
    np.testing.assert_array_equal(res.image[:, :, 3], image[:, :, 3])
    assert (res.image[10, 10, :3] == [128, 64, 191]).all()


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 1), (32, 32, 2)])
def test_greyscale_stays_greyscale(shape):
    image = np.full(shape, 10, np.uint8)
    res = inpaint(ConstantModel((0.2, 0.4, 0.6)), image, _square_mask(32, 32, 8, 8, 8))
    assert res.image.shape == shape and res.image.dtype == np.uint8
    assert res.image[10, 10].ravel()[0] == round(0.4 * 255)
    if len(shape) == 3 and shape[2] == 2:
        np.testing.assert_array_equal(res.image[:, :, 1], image[:, :, 1])


def test_16bit_stays_16bit_with_full_precision():
    image = np.full((32, 32, 3), 1000, np.uint16)
    res = inpaint(ConstantModel((0.5, 0.25, 0.75)), image, _square_mask(32, 32, 8, 8, 8), OFFICIAL)
    assert res.image.dtype == np.uint16
    assert tuple(res.image[10, 10]) == (
        round(0.5 * 65535),
        round(0.25 * 65535),
        round(0.75 * 65535),
    )
    assert (res.image[0, 0] == 1000).all()


def test_float32_image_stays_float():
    image = np.full((16, 16, 3), 0.1, np.float32)
    res = inpaint(ConstantModel(), image, _square_mask(16, 16, 4, 4, 4), OFFICIAL)
    assert res.image.dtype == np.float32
    assert res.image[5, 5, 1] == pytest.approx(0.25)


def test_original_strategy_runs_whole_image_padded_to_multiple_of_8():
    model = ConstantModel()
    inpaint(
        model,
        np.zeros((50, 61, 3), np.uint8),
        _square_mask(50, 61, 5, 5, 5),
        InpaintOptions(strategy="original"),
    )
    assert model.calls == [(56, 64)]


def test_resize_strategy_downscales_large_images():
    model = ConstantModel()
    res = inpaint(
        model,
        np.zeros((600, 900, 3), np.uint8),
        _square_mask(600, 900, 100, 100, 50),
        InpaintOptions(strategy="resize", resize_limit=300),
    )
    ((h, w),) = model.calls
    assert max(h, w) <= 304 and res.image.shape == (600, 900, 3)
    assert (res.image[120, 120] == [128, 64, 191]).all()
    assert (res.image[500, 800] == 0).all()


def test_crop_strategy_runs_one_window_per_region_at_full_resolution():
    model = ConstantModel()
    mask = _square_mask(1000, 1500, 100, 100, 40) | _square_mask(1000, 1500, 800, 1300, 40)
    res = inpaint(
        model,
        np.zeros((1000, 1500, 3), np.uint8),
        mask,
        InpaintOptions(strategy="crop", crop_margin=64),
    )
    assert len(model.calls) == 2
    assert all(max(c) < 400 for c in model.calls)
    assert (res.image[120, 120] == [128, 64, 191]).all() and (
        res.image[820, 1320] == [128, 64, 191]
    ).all()


def test_auto_is_original_for_small_and_crop_for_large_images():
    small, large = ConstantModel(), ConstantModel()
    inpaint(small, np.zeros((200, 300, 3), np.uint8), _square_mask(200, 300, 10, 10, 10))
    assert small.calls == [(200, 304)]
    inpaint(large, np.zeros((3000, 2000, 3), np.uint8), _square_mask(3000, 2000, 1500, 1000, 30))
    assert len(large.calls) == 1 and max(large.calls[0]) < 400


def test_large_photo_runs_only_a_window_around_the_object(tiny_model_dir):
    """A 6000×4000 photo: only the window around the object goes through the generator
    (bench/large_photo.py measures the time with the Big LaMa shape)."""
    real = load_model(tiny_model_dir)
    seen = []

    class Recorder(torch.nn.Module):
        size_multiple = 8
        device = torch.device("cpu")

        def forward(self, image, mask):
            seen.append(tuple(image.shape[-2:]))
            return real(image, mask)

    image = np.random.default_rng(2).integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    mask = _square_mask(4000, 6000, 2000, 3000, 120)
    res = inpaint(Recorder(), image, mask)
    # 120 px object + 2×8 px grow/feather + 2×128 px context = 392 px, not 6000.
    assert len(seen) == 1 and max(seen[0]) <= 400
    untouched = res.alpha == 0
    assert np.array_equal(res.image[untouched], image[untouched])
    assert not np.array_equal(res.image[2050, 3050], image[2050, 3050])


def test_progress_is_reported_and_can_abort():
    seen = []
    inpaint(
        ConstantModel(),
        np.zeros((16, 16, 3), np.uint8),
        _square_mask(16, 16, 2, 2, 4),
        progress=lambda f, s: seen.append((f, s)),
    )
    assert seen[0] == (0.0, "prepare") and seen[-1] == (1.0, "done")

    class Stop(Exception):
        pass

    def abort(fraction, stage):
        if stage == "inpaint":
            raise Stop

    with pytest.raises(Stop):
        inpaint(
            ConstantModel(),
            np.zeros((16, 16, 3), np.uint8),
            _square_mask(16, 16, 2, 2, 4),
            progress=abort,
        )


@pytest.mark.parametrize(
    ("image", "mask", "message"),
    [
        (
            np.zeros((8, 8, 3), np.uint8),
            np.zeros((8, 9), np.uint8),
            "mask size 9×8 != image size 8×8",
        ),
        (np.zeros((8, 8, 3), np.int32), np.zeros((8, 8), np.uint8), "image dtype"),
        (np.zeros((8, 8, 5), np.uint8), np.zeros((8, 8), np.uint8), "C in 1..4"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float64), "mask dtype"),
    ],
)
def test_bad_inputs_are_clear_errors(image, mask, message):
    with pytest.raises(ValueError, match=message):
        inpaint(ConstantModel(), image, mask)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="strategy must be one of"):
        InpaintOptions(strategy="magic")
    with pytest.raises(ValueError, match="mask_grow must be"):
        InpaintOptions(mask_grow=-1)


@pytest.mark.parametrize("size", [(1, 1), (3, 7), (9, 15), (16, 17)])
def test_tiny_images_are_filled(tiny_model_dir, size):
    """The network needs 2×2 at its bottleneck; tiny windows are mirrored up to fit."""
    image = np.full((*size, 3), 77, np.uint8)
    mask = np.full(size, 255, np.uint8)
    res = inpaint(load_model(tiny_model_dir), image, mask, OFFICIAL)
    assert res.image.shape == image.shape and (res.alpha == 1).all()
