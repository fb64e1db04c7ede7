"""The tensor request path (model/device_path.py) computes what the NumPy path computes.

Run on the CPU here (same device, same model): blend weights are equal, the result images
equal bit for bit except greyscale, where the channel mean may sum in another order (one
level at most). On a CUDA machine the same path runs on the GPU (last test).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lama_model.geometry import blend_weights, blend_weights_tensor, pad_symmetric
from lama_model.pipeline import OFFICIAL, InpaintOptions, inpaint
from lama_model.pipeline.device import DeviceInpainter, PinnedStaging, forward_batch


def _photo(rng, h, w, channels, dtype):
    shape = (h, w) if channels == 0 else (h, w, channels)
    if dtype == np.float32:
        return rng.random(shape, dtype=np.float32)
    top = np.iinfo(dtype).max
    return rng.integers(0, top + 1, shape, dtype=np.int64).astype(dtype)


def _blob_mask(rng, h, w, soft=True):
    mask = np.zeros((h, w), np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        mask[y : y + rng.integers(3, 20), x : x + rng.integers(3, 20)] = 255
    if soft:
        mask[rng.random((h, w)) < 0.01] = 60  # soft selection edges
    return mask


@pytest.mark.parametrize(("grow", "feather"), [(0, 0), (4, 4), (2, 7), (9, 0), (0, 5)])
def test_blend_weights_tensor_equal_numpy(grow, feather):
    rng = np.random.default_rng(grow * 10 + feather)
    mask = _blob_mask(rng, 61, 77)
    hole, alpha = blend_weights(mask, grow, feather)
    hole_t, alpha_t = blend_weights_tensor(torch.from_numpy(mask), grow, feather)
    np.testing.assert_array_equal(hole_t.numpy(), hole)
    np.testing.assert_array_equal(alpha_t.numpy(), alpha)


@pytest.mark.parametrize(("bottom", "right"), [(0, 0), (3, 5), (7, 1), (20, 33)])
def test_pad_symmetric_equals_numpy_symmetric(bottom, right):
    a = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
    expected = np.pad(a, ((0, bottom), (0, right)), mode="symmetric")
    got = pad_symmetric(torch.from_numpy(a)[None, None], bottom, right)[0, 0].numpy()
    np.testing.assert_array_equal(got, expected)


CASES = [
    # (channels, dtype, options)
    (3, np.uint8, InpaintOptions()),
    (4, np.uint8, InpaintOptions(mask_grow=2, feather=6)),
    (3, np.uint16, InpaintOptions()),
    (4, np.uint16, InpaintOptions(mask_grow=0, feather=3)),
    (4, np.float32, InpaintOptions()),
    (3, np.uint8, OFFICIAL),
    (3, np.uint8, InpaintOptions(strategy="crop", crop_margin=8)),
    (4, np.uint8, InpaintOptions(strategy="resize", resize_limit=64)),
    (3, np.uint8, InpaintOptions(strategy="auto", resize_limit=64, crop_margin=4)),
]


@pytest.mark.parametrize(("channels", "dtype", "options"), CASES)
def test_device_path_equals_numpy_path_on_cpu(tiny_model, channels, dtype, options):
    rng = np.random.default_rng(channels * 7 + len(str(options)))
    image = _photo(rng, 90, 117, channels, dtype)
    mask = _blob_mask(rng, 90, 117)
    expected = inpaint(tiny_model, image, mask, options)
    got = DeviceInpainter(tiny_model)(image, mask, options)
    assert got.image.dtype == image.dtype and got.image.shape == image.shape
    np.testing.assert_array_equal(got.alpha, expected.alpha)
    np.testing.assert_array_equal(got.image, expected.image)


@pytest.mark.parametrize(("channels", "dtype"), [(0, np.uint8), (1, np.uint16), (2, np.uint8)])
def test_device_path_greyscale_within_one_level(tiny_model, channels, dtype):
    rng = np.random.default_rng(5)
    image = _photo(rng, 40, 52, channels, dtype)
    mask = _blob_mask(rng, 40, 52)
    expected = inpaint(tiny_model, image, mask).image
    got = DeviceInpainter(tiny_model)(image, mask).image
    assert got.shape == expected.shape and got.dtype == expected.dtype
    diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= 1
    untouched = inpaint(tiny_model, image, mask).alpha == 0
    np.testing.assert_array_equal(got[untouched], image[untouched])


def test_empty_mask_returns_a_copy_without_running_the_model(tiny_model):
    image = np.full((20, 30, 3), 7, np.uint8)
    result = DeviceInpainter(tiny_model)(image, np.zeros((20, 30), np.uint8))
    np.testing.assert_array_equal(result.image, image)
    assert not result.alpha.any() and result.image is not image


def test_batched_forward_equals_one_by_one(tiny_model):
    rng = np.random.default_rng(3)
    runner = DeviceInpainter(tiny_model)
    pairs = [(_photo(rng, 64, 64, 3, np.uint8), _blob_mask(rng, 64, 64)) for _ in range(3)]
    single = [runner(image, mask).image for image, mask in pairs]
    prepared = [runner.prepare(image, mask, InpaintOptions()) for image, mask in pairs]
    forward_batch(tiny_model, [p.windows[0] for p in prepared])
    for p, expected in zip(prepared, single, strict=True):
        got = runner.finish(p).image
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # batched conv sums


def test_progress_and_cancellation_like_inpaint(tiny_model):
    seen = []
    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 255
    DeviceInpainter(tiny_model)(image, mask, progress=lambda f, s: seen.append(s))
    assert seen[0] == "prepare" and seen[-1] == "done" and "inpaint" in seen

    def stop(_f, stage):
        if stage == "inpaint":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        DeviceInpainter(tiny_model)(image, mask, progress=stop)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pinned_staging_is_reused_across_requests():
    staging = PinnedStaging()
    a = staging.buffer("pixels", 1000)
    b = staging.buffer("pixels", 800)
    assert a.data_ptr() == b.data_ptr() and a.is_pinned()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batched_requests_each_get_their_own_pixels(tiny_model, monkeypatch):
    """Uploads of a batch reuse one pinned slot: each must land before the next refills it."""
    import copy

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # batch vs single: same sums

    gpu = copy.deepcopy(tiny_model).to("cuda")
    runner = DeviceInpainter(gpu)
    rng = np.random.default_rng(4)
    pairs = [(_photo(rng, 256, 256, 4, np.uint8), _blob_mask(rng, 256, 256)) for _ in range(4)]
    single = [runner(image, mask).image for image, mask in pairs]
    prepared = [runner.prepare(image, mask, InpaintOptions()) for image, mask in pairs]
    forward_batch(gpu, [p.windows[0] for p in prepared])
    for p, (image, mask), expected in zip(prepared, pairs, single, strict=True):
        got = runner.finish(p).image
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 2
        untouched = runner(image, mask).alpha == 0
        np.testing.assert_array_equal(got[untouched], image[untouched])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("channels", "dtype"), [(3, np.uint8), (4, np.uint16), (4, np.float32)])
def test_cuda_device_path_matches_cpu_numpy_path(tiny_model, channels, dtype, monkeypatch):
    import copy

    # True float32 on the GPU (TF32 convolutions alone move the tiny model's fill by ~1e-2),
    # so the comparison checks the request path, not the convolution precision.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    rng = np.random.default_rng(11)
    image = _photo(rng, 90, 117, channels, dtype)
    mask = _blob_mask(rng, 90, 117)
    expected = inpaint(tiny_model, image, mask)
    gpu_model = copy.deepcopy(tiny_model).to("cuda")
    got = inpaint(gpu_model, image, mask)  # dispatches to the device path
    np.testing.assert_array_equal(got.alpha, expected.alpha)
    diff = np.abs(got.image.astype(np.float64) - expected.image.astype(np.float64))
    if dtype == np.float32:
        assert diff.max() <= 1e-4  # GPU vs CPU float32 kernels sum in other orders
    else:
        assert diff.max() <= 1  # ... which may flip a rounding: one level at most
    untouched = expected.alpha == 0
    np.testing.assert_array_equal(got.image[untouched], image[untouched])
