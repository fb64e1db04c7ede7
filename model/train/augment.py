"""Training-photo augmentations: which one a run uses (``--augment``), and a NumPy/PIL
approximation of the official one for installs without albumentations.

``--augment official`` (the default) is the official list run by albumentations itself
(:mod:`.official_augment`, the ``train`` extra); ``numpy`` is the approximation below, which is
not the official pipeline; ``none`` only pads and crops. Each is an :class:`Augmenter`.

The official pipeline (``get_transforms('distortions', out_size)`` in ``saicinpainting/training/
data/datasets.py``, albumentations + imgaug) is, in order, each step with probability 1/2 unless
noted:

1. random four-point perspective (corner jitter |N(0, σ)|, σ ~ U(0, 0.06) of the size; edges
   replicated),
2. random affine: scale x, y ~ U(0.7, 1.3) each, rotation ~ U(−40°, 40°), shear ~ U(−0.1°, 0.1°)
   (imgaug takes degrees), about the centre, reflected edges,
3. reflect-pad to at least the crop size (always),
4. optical (barrel/pincushion) distortion, k ~ U(−0.05, 0.05) for k1 = k2, camera f = size,
5. random crop of the output size (always), 6. horizontal flip,
7. CLAHE (clip limit ~ U(1, 4), 8×8 tiles), 8. brightness and contrast ±0.2,
9. hue ±5 (of 180), saturation ±30, value ±5 (of 255), then 10. scaling to [0, 1].

Here the geometric steps 1–5 are composed into one coordinate map evaluated only at the crop's
pixels, and the photo is sampled once, bilinearly (the official code resamples the whole photo up
to three times). CLAHE runs on the luma channel (YCbCr) instead of CIELAB's L, and the hue,
CLAHE and colour steps use PIL's colour conversions instead of OpenCV's: close, not equal. All
random numbers come from the ``np.random.RandomState`` passed in, so a sample is a function of
its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Distortions:
    """Parameters of the official ``distortions`` family (albumentations defaults filled in)."""

    p: float = 0.5
    perspective_sigma: tuple[float, float] = (0.0, 0.06)
    affine_scale: tuple[float, float] = (0.7, 1.3)
    rotate_degrees: tuple[float, float] = (-40.0, 40.0)
    shear_degrees: tuple[float, float] = (-0.1, 0.1)
    optical_k: float = 0.05
    clahe_clip: tuple[float, float] = (1.0, 4.0)
    clahe_grid: int = 8
    brightness: float = 0.2
    contrast: float = 0.2
    hue_shift: float = 5.0  # OpenCV hue units (0…180)
    saturation_shift: float = 30.0
    value_shift: float = 5.0


DISTORTIONS = Distortions()


def reflect101(coord: np.ndarray, size: int) -> np.ndarray:
    """Fold continuous pixel coordinates into ``[0, size − 1]`` by mirroring about the edge
    pixels (OpenCV's BORDER_REFLECT_101, NumPy's "reflect")."""
    if size == 1:
        return np.zeros_like(coord)
    if coord.min() >= 0 and coord.max() <= size - 1:
        return coord  # the common case: nothing to fold
    period = 2 * (size - 1)
    folded = np.mod(coord, period)
    return np.where(folded > size - 1, period - folded, folded)


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3×3 projective map sending the four points ``src`` to ``dst`` (both 4×2, x y)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    h = np.linalg.solve(np.array(rows, np.float64), np.array(rhs, np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def bilinear(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sample an H×W×C image at float coordinates bilinearly (outside: edge pixels repeat)."""
    height, width, channels = image.shape
    y = np.clip(y, 0, height - 1).astype(np.float32)
    x = np.clip(x, 0, width - 1).astype(np.float32)
    y0 = np.minimum(y.astype(np.int64), height - 1)  # floor: coordinates are >= 0 here
    x0 = np.minimum(x.astype(np.int64), width - 1)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    flat = image.reshape(-1, channels)

    def at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return flat[rows * width + cols].astype(np.float32)

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def _draw_perspective(
    rng: np.random.RandomState, params: Distortions, height: int, width: int
) -> np.ndarray:
    """A random perspective map of the whole photo: the homography output pixel → source."""
    sigma = rng.uniform(*params.perspective_sigma)
    jitter = np.mod(np.abs(rng.normal(0.0, sigma, size=(4, 2))), 1.0)
    w, h = width - 1, height - 1
    quad = np.array(
        [
            [jitter[0, 0] * w, jitter[0, 1] * h],
            [(1 - jitter[1, 0]) * w, jitter[1, 1] * h],
            [(1 - jitter[2, 0]) * w, (1 - jitter[2, 1]) * h],
            [jitter[3, 0] * w, (1 - jitter[3, 1]) * h],
        ]
    )
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    return _homography(corners, quad)


def _draw_affine(rng: np.random.RandomState, params: Distortions) -> np.ndarray:
    """A random scale, rotation and shear about the centre: the 2×2 map output → source."""
    sx, sy = rng.uniform(*params.affine_scale), rng.uniform(*params.affine_scale)
    angle = math.radians(rng.uniform(*params.rotate_degrees))
    shx, shy = (math.radians(rng.uniform(*params.shear_degrees)) for _ in range(2))
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    shear = np.array([[1, math.tan(shx)], [math.tan(shy), 1]])
    return np.linalg.inv(rotation @ shear @ np.diag([sx, sy]))


def random_crop(
    image: np.ndarray, crop: int, rng: np.random.RandomState, params: Distortions | None
) -> np.ndarray:
    """Steps 1–5 (geometry) for one photo: a ``crop × crop × 3`` uint8 array.

    ``params=None`` does only the reflect padding and the random crop.
    """
    height, width = image.shape[:2]
    # Each step's map is drawn in pipeline order, then applied from the crop backwards.
    perspective = affine = None
    optical_k = 0.0
    if params is not None and rng.random_sample() < params.p:
        perspective = _draw_perspective(rng, params, height, width)
    if params is not None and rng.random_sample() < params.p:
        affine = _draw_affine(rng, params)
    padded_h, padded_w = max(height, crop), max(width, crop)
    pad_top, pad_left = (padded_h - height) // 2, (padded_w - width) // 2
    if params is not None and rng.random_sample() < params.p:
        optical_k = rng.uniform(-params.optical_k, params.optical_k)
    top = int((padded_h - crop) * rng.random_sample())
    left = int((padded_w - crop) * rng.random_sample())

    y, x = np.meshgrid(
        np.arange(top, top + crop, dtype=np.float64),
        np.arange(left, left + crop, dtype=np.float64),
        indexing="ij",
    )
    if optical_k:
        # cv2.initUndistortRectifyMap with f = size, centre = size / 2, k1 = k2 = k.
        xn, yn = (x - padded_w * 0.5) / padded_w, (y - padded_h * 0.5) / padded_h
        r2 = xn * xn + yn * yn
        factor = 1 + optical_k * r2 + optical_k * r2 * r2
        x, y = xn * factor * padded_w + padded_w * 0.5, yn * factor * padded_h + padded_h * 0.5
        x, y = reflect101(x, padded_w), reflect101(y, padded_h)
    x, y = reflect101(x - pad_left, width), reflect101(y - pad_top, height)
    if affine is not None:
        cx, cy = (width - 1) / 2, (height - 1) / 2
        dx, dy = x - cx, y - cy
        x = affine[0, 0] * dx + affine[0, 1] * dy + cx
        y = affine[1, 0] * dx + affine[1, 1] * dy + cy
        x, y = reflect101(x, width), reflect101(y, height)
    if perspective is not None:
        hx = perspective[0, 0] * x + perspective[0, 1] * y + perspective[0, 2]
        hy = perspective[1, 0] * x + perspective[1, 1] * y + perspective[1, 2]
        hw = perspective[2, 0] * x + perspective[2, 1] * y + perspective[2, 2]
        x, y = hx / hw, hy / hw  # outside the photo: edge pixels repeat (bilinear clamps)
    out = bilinear(image, y, x)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def clahe(channel: np.ndarray, clip_limit: float, grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a uint8 H×W channel (as OpenCV)."""
    height, width = channel.shape
    tile_h, tile_w = -(-height // grid), -(-width // grid)
    padded = np.pad(channel, ((0, tile_h * grid - height), (0, tile_w * grid - width)), "reflect")
    tiles = padded.reshape(grid, tile_h, grid, tile_w).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(grid * grid, -1)
    offsets = (np.arange(grid * grid) * 256)[:, None]
    hist = np.bincount((tiles + offsets).ravel(), minlength=grid * grid * 256).reshape(-1, 256)
    area = tile_h * tile_w
    limit = max(int(clip_limit * area / 256), 1)
    excess = np.maximum(hist - limit, 0).sum(1, keepdims=True)
    hist = np.minimum(hist, limit) + excess // 256
    residual = (excess[:, 0] % 256).astype(np.int64)
    for t in np.flatnonzero(residual):  # spread what is left evenly over the bins
        step = max(256 // int(residual[t]), 1)
        hist[t, ::step][: int(residual[t])] += 1
    lut = np.clip(np.rint(np.cumsum(hist, 1) * (255.0 / area)), 0, 255).reshape(grid, grid, 256)
    # Bilinear blend of the four nearest tiles' mappings (tile centres as OpenCV places them).
    fy = np.arange(height) / tile_h - 0.5
    fx = np.arange(width) / tile_w - 0.5
    y0, x0 = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    wy, wx = (fy - y0)[:, None], (fx - x0)[None, :]
    y1, x1 = np.minimum(y0 + 1, grid - 1), np.minimum(x0 + 1, grid - 1)
    y0, x0 = np.maximum(y0, 0), np.maximum(x0, 0)
    v = channel.astype(np.int64)
    row0, row1, col0, col1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
    top = lut[row0, col0, v] * (1 - wx) + lut[row0, col1, v] * wx
    bottom = lut[row1, col0, v] * (1 - wx) + lut[row1, col1, v] * wx
    return np.clip(np.rint(top * (1 - wy) + bottom * wy), 0, 255).astype(np.uint8)


def colour_jitter(image: np.ndarray, rng: np.random.RandomState, params: Distortions) -> np.ndarray:
    """Steps 7–9 (CLAHE, brightness/contrast, hue/saturation/value) on a uint8 H×W×3 array."""
    if rng.random_sample() < params.p:
        clip = rng.uniform(*params.clahe_clip)
        ycbcr = np.asarray(Image.fromarray(image).convert("YCbCr")).copy()
        ycbcr[..., 0] = clahe(ycbcr[..., 0], clip, params.clahe_grid)
        image = np.asarray(Image.fromarray(ycbcr, "YCbCr").convert("RGB"))
    if rng.random_sample() < params.p:
        alpha = 1.0 + rng.uniform(-params.contrast, params.contrast)
        beta = rng.uniform(-params.brightness, params.brightness)
        image = np.clip(image.astype(np.float32) * alpha + beta * 255, 0, 255).astype(np.uint8)
    if rng.random_sample() < params.p:
        hue = rng.uniform(-params.hue_shift, params.hue_shift) * 256 / 180  # PIL hue: 0…255
        sat = rng.uniform(-params.saturation_shift, params.saturation_shift)
        val = rng.uniform(-params.value_shift, params.value_shift)
        hsv = np.asarray(Image.fromarray(image).convert("HSV")).astype(np.float32)
        hsv[..., 0] = np.mod(np.rint(hsv[..., 0] + hue), 256)  # hue is an angle: wrap
        hsv[..., 1] = np.clip(np.rint(hsv[..., 1] + sat), 0, 255)
        hsv[..., 2] = np.clip(np.rint(hsv[..., 2] + val), 0, 255)
        image = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"))
    return image


def augment_photo(
    image: np.ndarray, crop: int, rng: np.random.RandomState, augment: bool = True,
    params: Distortions = DISTORTIONS,
) -> np.ndarray:  # fmt: skip
    """A training crop of a uint8 H×W×3 photo: float32 3×crop×crop in [0, 1].

    ``augment=False`` keeps only the reflect padding and the random crop.
    """
    out = random_crop(image, crop, rng, params if augment else None)
    if augment:
        if rng.random_sample() < params.p:
            out = out[:, ::-1]
        out = colour_jitter(np.ascontiguousarray(out), rng, params)
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32) / 255.0


class Augmenter(Protocol):
    """Makes one training crop: uint8 H×W×3 photo → float32 3×crop×crop in [0, 1], every random
    choice drawn from (or seeded by) ``rng``."""

    def __call__(self, image: np.ndarray, rng: np.random.RandomState) -> np.ndarray: ...


@dataclass(frozen=True)
class ApproximateDistortions:
    """``--augment numpy``: :func:`augment_photo` with the distortions (not the official code)."""

    crop: int

    def __call__(self, image: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        return augment_photo(image, self.crop, rng, augment=True)


@dataclass(frozen=True)
class PadAndCrop:
    """``--augment none``: reflect padding to the crop size and a random crop, nothing else."""

    crop: int

    def __call__(self, image: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        return augment_photo(image, self.crop, rng, augment=False)


# --augment choices (official first: the default); the help text says what each is.
AUGMENTATIONS: tuple[str, ...] = ("official", "numpy", "none")


def make_augmenter(kind: str, crop: int) -> Augmenter:
    """The named augmentation for ``crop × crop`` crops. ``official`` needs albumentations
    (ValueError naming the ``train`` extra if it is missing)."""
    if kind == "official":
        from lama_model.train.official_augment import OfficialDistortions

        return OfficialDistortions(crop)
    if kind == "numpy":
        return ApproximateDistortions(crop)
    if kind == "none":
        return PadAndCrop(crop)
    raise ValueError(f"unknown augmentation {kind!r}; choose one of {', '.join(AUGMENTATIONS)}")
