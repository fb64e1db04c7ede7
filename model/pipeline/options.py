"""What an inpainting request asks for and what it gets: options, results, the plan.

Both executors (:mod:`lama_model.pipeline.host` in NumPy, :mod:`lama_model.pipeline.device`
in tensors) validate their inputs, choose the active area and plan their windows here, so
the two cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lama_model.choices import REFINE_PRECISIONS, STRATEGIES
from lama_model.errors import RefineError
from lama_model.geometry import Box, merge_overlapping, region_boxes

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class RefineOptions:
    """How to refine; the defaults are the official refiner configuration.

    - ``n_iters``: forwards per refined scale (``n_iters - 1`` Adam steps);
    - ``lr``: Adam's learning rate on the features;
    - ``min_side``, ``max_scales``: the number of pyramid levels (see :func:`pyramid_sizes`);
    - ``px_budget``: larger inputs are refined downsized to this many pixels;
    - ``modulo``: each level is reflect-padded to a multiple of this;
    - ``precision``: ``auto`` = bf16 autocast on CUDA when supported, else float32;
    - ``checkpoint``: recompute the residual blocks in the backward pass (memory);
    - ``channels_last``: run the convolutions on NHWC activations (weights untouched; may be
      faster with tensor cores: measure with ``bench/refine.py --channels-last``).
    """

    n_iters: int = 15
    lr: float = 0.002
    min_side: int = 512
    max_scales: int = 3
    px_budget: int = 1_800_000
    modulo: int = 8
    precision: str = "auto"
    checkpoint: bool = True
    channels_last: bool = False

    def __post_init__(self) -> None:
        for name in ("n_iters", "min_side", "max_scales", "px_budget", "modulo"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RefineError(f"refine {name} must be a positive integer, not {value!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise RefineError(f"refine lr must be a positive number, not {self.lr!r}")
        if self.precision not in REFINE_PRECISIONS:
            choices = ", ".join(REFINE_PRECISIONS)
            raise RefineError(
                f"refine precision must be one of {choices}, not {self.precision!r}"
            )


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
        """The whole-image result, as :func:`lama_model.pipeline.inpaint` returns it."""
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


def resolved_strategy(options: InpaintOptions, height: int, width: int) -> str:
    """``options.strategy`` with ``auto`` decided: ``original`` up to the resize limit, else
    ``crop``."""
    if options.strategy != "auto":
        return options.strategy
    return "original" if max(height, width) <= options.resize_limit else "crop"


def active_box(bbox: Box, options: InpaintOptions, height: int, width: int) -> Box:
    """The area the blend can touch: the mask's bounding box grown by the blend radius."""
    radius = options.mask_grow + options.feather
    return bbox.grow(radius + 1, radius + 1, height, width)


def plan_windows(
    hole: np.ndarray, active: Box, options: InpaintOptions, h: int, w: int
) -> list[tuple[Box, float]]:
    """Windows to run and the scale factor (≤ 1) for each.

    ``hole`` is only read for ``crop`` (its connected parts give the windows); the other
    strategies take any array.
    """
    whole = Box(0, 0, h, w)
    limit = options.resize_limit
    strategy = resolved_strategy(options, h, w)
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


def as_hwc(image: np.ndarray) -> np.ndarray:
    """``image`` checked and seen as ``H×W×C`` (a view; a 2-D image gains a channel axis)."""
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


def as_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` checked against the image ``size`` and seen as ``H×W`` uint8 (bool → 0/255)."""
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
