"""The NumPy executor: the inpainting pipeline with its pixel work on the host.

Image and mask in, the filled region out; :mod:`lama_model.pipeline` picks this executor
for models that compute on a CPU (and for refinement).

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

import numpy as np
import torch
import torch.nn.functional as F

from lama_model.geometry import (
    blend_weights,
    bounding_box,
    colour_channels,
    pad_amount,
    pixel_scale,
)
from lama_model.interface import ServedModel
from lama_model.pipeline.options import (
    InpaintOptions,
    ProgressFn,
    RegionResult,
    active_box,
    as_hwc,
    as_mask,
    plan_windows,
)
from lama_model.pipeline.refine import RefineOptions, refine_window


def inpaint_region_on_host(
    model: ServedModel,
    image: np.ndarray,
    mask: np.ndarray,
    options: InpaintOptions,
    progress: ProgressFn | None = None,
) -> RegionResult:
    """:func:`lama_model.pipeline.inpaint_region` with NumPy pre- and post-processing."""
    report = progress or (lambda _f, _s: None)
    pixels = as_hwc(image)
    mask8 = as_mask(mask, pixels.shape[:2])
    report(0.0, "prepare")
    bbox = bounding_box(mask8)
    if bbox is None:
        report(1.0, "done")
        return RegionResult(image, None)

    h, w = mask8.shape
    # Everything below works inside the mask's bounding box grown by the blend radius.
    active = active_box(bbox, options, h, w)
    hole_a, alpha_a = blend_weights(mask8[active.slices], options.mask_grow, options.feather)
    hole = np.zeros((h, w), dtype=bool)
    hole[active.slices] = hole_a

    windows = plan_windows(hole, active, options, h, w)
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


def _run_window(
    model: ServedModel, rgb: np.ndarray, hole: np.ndarray, scale: float
) -> np.ndarray:
    """Run the generator on one window; returns the prediction (H×W×3 float32) at full size."""
    h, w = hole.shape
    multiple, device = model.size_multiple, model.device
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
    model: ServedModel,
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
    model: ServedModel, rgb: np.ndarray, hole: np.ndarray, multiple: int, device: torch.device
) -> np.ndarray:
    h, w = hole.shape
    ph, pw = pad_amount(h, multiple), pad_amount(w, multiple)
    rgb_p = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
    hole_p = np.pad(hole, ((0, ph), (0, pw)), mode="symmetric")
    img_t = torch.from_numpy(np.ascontiguousarray(rgb_p)).permute(2, 0, 1)[None].to(device)
    mask_t = torch.from_numpy(hole_p.astype(np.float32))[None, None].to(device)
    with torch.inference_mode():
        out = model(img_t, mask_t)
    out = out.float()[0, :, :h, :w].permute(1, 2, 0)
    return out.cpu().numpy()


def _to_float_rgb(pixels: np.ndarray) -> np.ndarray:
    colour = pixels[:, :, : colour_channels(pixels.shape[2])]
    rgb = colour.astype(np.float32) / np.float32(pixel_scale(pixels.dtype))
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return rgb


def _composite(src: np.ndarray, fill: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``fill`` blended into a copy of ``src`` (``h×w×C``); alpha == 0 keeps the input pixel."""
    base = _to_float_rgb(src)
    a = alpha[:, :, None]
    blended = a * fill + (1.0 - a) * base
    colour = colour_channels(src.shape[2])
    if colour == 1:  # greyscale in, greyscale out
        blended = blended.mean(axis=2, keepdims=True)
    scale = pixel_scale(src.dtype)
    if src.dtype == np.float32:
        converted = blended.astype(np.float32)
    else:
        converted = np.clip(np.rint(blended * scale), 0, scale).astype(src.dtype)
    out = src.copy()
    touched = alpha > 0
    out[:, :, :colour][touched] = converted[touched]
    return out
