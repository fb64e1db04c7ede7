"""The inpainting path: image and mask in, filled image out.

Steps, following the official ``predict.py`` where it matters for equivalence:
1. pixels → float RGB in [0, 1] (greyscale replicated, alpha set aside);
2. the soft mask → generator hole and feathered blend weights (:mod:`lama_model.geometry`);
3. per strategy, windows of the image go through the generator: padded at the bottom/right
   to a multiple of 8 with NumPy's ``symmetric`` mode, masked, run, cropped back;
4. composite ``alpha · fill + (1 − alpha) · image`` and back to the input's dtype, **rounding**
   (truncation is the source of the grey tint users report); where ``alpha == 0`` the input
   pixel is copied unchanged.

With ``mask_grow=0, feather=0, strategy="original"`` the result equals the official path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lama_model.choices import STRATEGIES
from lama_model.geometry import Box, blend_weights, bounding_box, merge_overlapping, region_boxes
from lama_model.pipeline.refine import RefineOptions, refine_window

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class InpaintOptions:
    """How to fill.

    - ``mask_grow``: pixels added around the selection (object halos), fully replaced.
    - ``feather``: width of the soft transition beyond the grown mask.
    - ``strategy``: ``original`` runs the whole image at full size; ``resize`` downsizes an
      image larger than ``resize_limit``, fills, upsizes the fill; ``crop`` runs each masked
      region with a context margin at full resolution (downsized only if the crop itself
      exceeds ``resize_limit``); ``auto`` is ``original`` up to ``resize_limit`` and ``crop``
      above it.
    - ``crop_margin``: minimal context around a region for ``crop`` (at least half the
      region's size is taken too).
    - ``refine``: sharpen each window's fill with the official high-resolution refinement
      (:mod:`lama_model.pipeline.refine`; slower, needs the eager generator): ``True`` for the
      official settings or a :class:`~lama_model.pipeline.refine.RefineOptions`. Windows then run at
      full resolution up to the refiner's pixel budget instead of ``resize_limit``.
    """

    mask_grow: int = 4
    feather: int = 4
    strategy: str = "auto"
    resize_limit: int = 1024
    crop_margin: int = 128
    refine: bool | RefineOptions = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}"
            )
        for name in ("mask_grow", "feather"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 256:
                raise ValueError(f"{name} must be an integer in 0..256, not {value!r}")
        if not isinstance(self.resize_limit, int) or self.resize_limit < 64:
            raise ValueError(f"resize_limit must be an integer >= 64, not {self.resize_limit!r}")
        if not isinstance(self.crop_margin, int) or self.crop_margin < 0:
            raise ValueError(
                f"crop_margin must be a non-negative integer, not {self.crop_margin!r}"
            )
        if not isinstance(self.refine, bool | RefineOptions):
            raise ValueError(f"refine must be true, false or RefineOptions, not {self.refine!r}")


OFFICIAL = InpaintOptions(mask_grow=0, feather=0, strategy="original")


@dataclass
class InpaintResult:
    """``image``: same shape and dtype as the input. ``alpha``: the blend weight used."""

    image: np.ndarray
    alpha: np.ndarray


@dataclass
class RegionResult:
    """The outcome as the touched region only: what a server needs to patch its reply.

    ``pixels`` (``h×w×C`` in the input's canonical channel order and dtype) and ``alpha``
    cover ``box``; outside it the result equals the input. ``box`` is None for an empty mask.
    """

    image: np.ndarray  # the caller's input
    box: Box | None
    pixels: np.ndarray | None = None
    alpha: np.ndarray | None = None

    def full(self) -> InpaintResult:
        """The whole-image result, as :func:`inpaint` returns it."""
        result = self.image.copy()
        alpha_full = np.zeros(result.shape[:2], dtype=np.float32)
        if self.box is not None:
            assert self.pixels is not None and self.alpha is not None
            alpha_full[self.box.slices] = self.alpha
            if result.ndim == 2:
                result[self.box.slices] = self.pixels[:, :, 0]
            else:
                result[self.box.slices] = self.pixels
        return InpaintResult(result, alpha_full)


def inpaint(
    model: torch.nn.Module,
    image: np.ndarray,
    mask: np.ndarray,
    options: InpaintOptions = InpaintOptions(),  # noqa: B008 - frozen dataclass
    progress: ProgressFn | None = None,
) -> InpaintResult:
    """Fill the masked part of ``image``.

    ``image``: ``H×W`` or ``H×W×C`` (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA), uint8, uint16 or
    float32 in [0, 1]. ``mask``: ``H×W`` uint8, soft 0..255 (> 127 = hole), or bool.
    ``model``: a :class:`~lama_model.weights.checkpoint.LamaModel` or anything with the same
    ``forward(image, mask)``. ``progress(fraction, stage)`` is called along the way; an
    exception raised from it aborts the work (used for cancellation).
    """
    return inpaint_region(model, image, mask, options, progress).full()


def inpaint_region(
    model: torch.nn.Module,
    image: np.ndarray,
    mask: np.ndarray,
    options: InpaintOptions = InpaintOptions(),  # noqa: B008 - frozen dataclass
    progress: ProgressFn | None = None,
) -> RegionResult:
    """:func:`inpaint`, but only the touched region comes back: no copy of the whole image
    (a server patches the region into the request's pixels)."""
    if _runs_on_accelerator(model) and not getattr(options, "refine", False):
        # On a GPU the pixel work runs there too (one upload, one download per request).
        from lama_model.pipeline.device import DeviceInpainter

        return DeviceInpainter(model).region(image, mask, options, progress)
    report = progress or (lambda _f, _s: None)
    pixels = _as_hwc(image)
    mask8 = _as_mask(mask, pixels.shape[:2])
    report(0.0, "prepare")
    radius = options.mask_grow + options.feather
    bbox = bounding_box(mask8)
    if bbox is None:
        report(1.0, "done")
        return RegionResult(image, None)

    h, w = mask8.shape
    # Everything below works inside the mask's bounding box grown by the blend radius.
    active = bbox.grow(radius + 1, radius + 1, h, w)
    hole_a, alpha_a = blend_weights(mask8[active.slices], options.mask_grow, options.feather)
    hole = np.zeros((h, w), dtype=bool)
    hole[active.slices] = hole_a

    windows = _plan(hole, active, options, h, w)
    fill = np.zeros((active.height, active.width, 3), dtype=np.float32)
    for i, (window, scale) in enumerate(windows):
        report(0.05 + 0.9 * i / len(windows), "inpaint")
        rgb = _to_float_rgb(pixels[window.slices])
        predicted = None
        if options.refine:
            predicted = _refine_window(
                model, rgb, hole[window.slices], options, report, i, len(windows)
            )
        if predicted is None:
            predicted = _run_window(model, rgb, hole[window.slices], scale)
        # Paste where this window covers the active area.
        inter = window.intersection(active)
        src = predicted[inter.slices_in(window)]
        dst = fill[inter.slices_in(active)]
        sel = hole[inter.slices]
        dst[sel] = src[sel]
    report(0.95, "composite")
    region = _composite(pixels[active.slices], fill, alpha_a)
    report(1.0, "done")
    return RegionResult(image, active, region, alpha_a)


def _runs_on_accelerator(model: torch.nn.Module) -> bool:
    """True for a model that computes on a CUDA device (the NumPy path stays for CPUs)."""
    device = getattr(model, "device", None)
    return isinstance(device, torch.device) and device.type == "cuda"


def _plan(
    hole: np.ndarray, active: Box, options: InpaintOptions, h: int, w: int
) -> list[tuple[Box, float]]:
    """Windows to run and the scale factor (≤ 1) for each."""
    whole = Box(0, 0, h, w)
    limit = options.resize_limit
    strategy = options.strategy
    if strategy == "auto":
        strategy = "original" if max(h, w) <= limit else "crop"
    if strategy == "original":
        return [(whole, 1.0)]
    if strategy == "resize":
        return [(whole, min(1.0, limit / max(h, w)))]
    local = hole[active.slices]
    crops = []
    for part in region_boxes(local):
        part = Box(
            part.y0 + active.y0, part.x0 + active.x0, part.y1 + active.y0, part.x1 + active.x0
        )
        my = max(options.crop_margin, part.height // 2)
        mx = max(options.crop_margin, part.width // 2)
        crops.append(part.grow(my, mx, h, w))
    return [(c, min(1.0, limit / max(c.height, c.width))) for c in merge_overlapping(crops)]


def _run_window(
    model: torch.nn.Module, rgb: np.ndarray, hole: np.ndarray, scale: float
) -> np.ndarray:
    """Run the generator on one window; returns the prediction (H×W×3 float32) at full size."""
    h, w = hole.shape
    multiple = int(getattr(model, "size_multiple", 8))
    # A model may take its inputs elsewhere than it runs (FastModel on CUDA takes CPU
    # tensors and moves them through pinned memory itself).
    device = getattr(model, "input_device", None) or getattr(model, "device", torch.device("cpu"))
    if scale < 1.0:
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        img_t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
        small = F.interpolate(
            img_t, size=(sh, sw), mode="bilinear", antialias=True, align_corners=False
        )
        rgb_s = small[0].permute(1, 2, 0).clamp_(0, 1).numpy()
        hole_t = torch.from_numpy(hole.astype(np.float32))[None, None]
        # A pixel is a hole at the small size if any of its source pixels is one.
        hole_s = F.adaptive_max_pool2d(hole_t, (sh, sw))[0, 0].numpy() > 0
        pred = _forward_padded(model, rgb_s, hole_s, multiple, device)
        pred_t = torch.from_numpy(pred).permute(2, 0, 1)[None]
        big = F.interpolate(pred_t, size=(h, w), mode="bicubic", align_corners=False)
        return big[0].permute(1, 2, 0).clamp_(0, 1).numpy()
    return _forward_padded(model, rgb, hole, multiple, device)


def _refine_window(
    model: torch.nn.Module,
    rgb: np.ndarray,
    hole: np.ndarray,
    options: InpaintOptions,
    report: ProgressFn,
    index: int,
    count: int,
) -> np.ndarray | None:
    """Refined fill of window ``index`` of ``count`` (None if too small to refine)."""
    settings = options.refine if isinstance(options.refine, RefineOptions) else RefineOptions()
    start, span = 0.05 + 0.9 * index / count, 0.9 / count
    return refine_window(
        model, rgb, hole, settings, progress=lambda f, stage: report(start + span * f, stage)
    )


def _forward_padded(
    model: torch.nn.Module, rgb: np.ndarray, hole: np.ndarray, multiple: int, device: torch.device
) -> np.ndarray:
    h, w = hole.shape
    # Reflect padding inside the network needs at least 2×2 at the bottleneck, so tiny
    # windows are mirrored up to twice the size multiple (the official code crashes there).
    ph = max((-h) % multiple, 2 * multiple - h)
    pw = max((-w) % multiple, 2 * multiple - w)
    rgb_p = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
    hole_p = np.pad(hole, ((0, ph), (0, pw)), mode="symmetric")
    img_t = torch.from_numpy(np.ascontiguousarray(rgb_p)).permute(2, 0, 1)[None].to(device)
    mask_t = torch.from_numpy(hole_p.astype(np.float32))[None, None].to(device)
    with torch.inference_mode():
        out = model(img_t, mask_t)
    out = out.float()[0, :, :h, :w].permute(1, 2, 0)
    return out.cpu().numpy()


def _as_hwc(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, not {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"image dtype must be uint8, uint16 or float32, not {image.dtype}")
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"image must be H×W or H×W×C with C in 1..4, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError("image is empty")
    return image


def _as_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy array, not {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.shape != size:
        raise ValueError(
            f"mask size {mask.shape[1]}×{mask.shape[0]} != image size {size[1]}×{size[0]}"
        )
    if mask.dtype == bool:
        return mask.astype(np.uint8) * 255
    if mask.dtype != np.uint8:
        raise ValueError(f"mask dtype must be uint8 (0..255) or bool, not {mask.dtype}")
    return mask


def _scale_of(dtype: np.dtype) -> float:
    return {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(np.dtype(dtype), 1.0)


def _to_float_rgb(pixels: np.ndarray) -> np.ndarray:
    colour = pixels[:, :, :3] if pixels.shape[2] >= 3 else pixels[:, :, :1]
    rgb = colour.astype(np.float32) / np.float32(_scale_of(pixels.dtype))
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return rgb


def _composite(src: np.ndarray, fill: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``fill`` blended into a copy of ``src`` (``h×w×C``); alpha == 0 keeps the input pixel."""
    base = _to_float_rgb(src)
    a = alpha[:, :, None]
    blended = a * fill + (1.0 - a) * base
    if src.shape[2] < 3:  # greyscale in, greyscale out
        blended = blended.mean(axis=2, keepdims=True)
    colour_channels = 3 if src.shape[2] >= 3 else 1
    scale = _scale_of(src.dtype)
    if src.dtype == np.float32:
        converted = blended.astype(np.float32)
    else:
        converted = np.clip(np.rint(blended * scale), 0, scale).astype(src.dtype)
    out = src.copy()
    touched = alpha > 0
    out[:, :, :colour_channels][touched] = converted[touched]
    return out
