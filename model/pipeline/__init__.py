"""The inpainting pipeline: :func:`inpaint` and :func:`inpaint_region`.

The plan and the options live in :mod:`~lama_model.pipeline.options` (torch-free, so command
lines build their ``--help`` from its defaults); the work is done by one of two executors,
chosen here: :mod:`~lama_model.pipeline.host` (NumPy on the host) or
:mod:`~lama_model.pipeline.device` (tensor ops on the model's GPU). High-resolution
refinement is :mod:`~lama_model.pipeline.refine`. The executors are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lama_model.pipeline.options import (
    OFFICIAL,
    InpaintOptions,
    InpaintResult,
    ProgressFn,
    RefineError,
    RefineOptions,
    RegionResult,
    resolved_strategy,
)

if TYPE_CHECKING:
    import numpy as np

    from lama_model.interface import ServedModel

_LAZY = {"DeviceInpainter": "lama_model.pipeline.device"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def inpaint(
    model: ServedModel,
    image: np.ndarray,
    mask: np.ndarray,
    options: InpaintOptions = InpaintOptions(),  # noqa: B008 - frozen dataclass
    progress: ProgressFn | None = None,
) -> InpaintResult:
    """Fill the masked part of ``image``.

    ``image``: ``H×W`` or ``H×W×C`` (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA), uint8, uint16 or
    float32 in [0, 1]. ``mask``: ``H×W`` uint8, soft 0..255 (> 127 = hole), or bool.
    ``model``: a :class:`~lama_model.interface.ServedModel` (``size_multiple``, ``device`` and
    ``forward(image, mask)`` are what the pipeline uses). ``progress(fraction, stage)`` is
    called along the way; an exception raised from it aborts the work (cancellation).
    """
    return inpaint_region(model, image, mask, options, progress).full()


def inpaint_region(
    model: ServedModel,
    image: np.ndarray,
    mask: np.ndarray,
    options: InpaintOptions = InpaintOptions(),  # noqa: B008 - frozen dataclass
    progress: ProgressFn | None = None,
) -> RegionResult:
    """:func:`inpaint`, but only the touched region comes back: no copy of the whole image
    (a server patches the region into the request's pixels)."""
    if runs_on_accelerator(model) and not options.refine:
        from lama_model.pipeline.device import DeviceInpainter

        # On a GPU the pixel work runs there too (one upload, one download per request).
        return DeviceInpainter(model).region(image, mask, options, progress)
    from lama_model.pipeline.host import inpaint_region_on_host

    return inpaint_region_on_host(model, image, mask, options, progress)


def runs_on_accelerator(model: ServedModel) -> bool:
    """True for a model that computes on a CUDA device (the NumPy executor stays for CPUs)."""
    import torch

    device = model.device
    return isinstance(device, torch.device) and device.type == "cuda"


__all__ = [
    "OFFICIAL",
    "DeviceInpainter",
    "InpaintOptions",
    "InpaintResult",
    "ProgressFn",
    "RefineError",
    "RefineOptions",
    "RegionResult",
    "inpaint",
    "inpaint_region",
    "resolved_strategy",
    "runs_on_accelerator",
]
