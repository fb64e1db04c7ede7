"""LaMa inpainting: load a model, fill the masked part of an image.

The public face, lazy: ``import lama_model`` loads nothing heavy, and each name below imports
its module (and torch) on first use, so command lines build their ``--help`` without torch::

    from lama_model import load_for_inference, inpaint, InpaintOptions

``choices`` (the torch-free lists of strategies, precisions, backends, devices) is a
submodule: ``from lama_model import choices``.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    # loading
    "load_for_inference": "lama_model.factory",
    "load_model": "lama_model.weights.checkpoint",
    "resolve_device": "lama_model.devices",
    "resolve_devices": "lama_model.devices",
    "ServedModel": "lama_model.interface",
    "ServedSegmenter": "lama_model.interface",
    # segmenting: a box or clicks become the object's mask
    "load_segmenter": "lama_model.segment.loader",
    "ImageEmbedding": "lama_model.segment",
    "SEGMENTERS": "lama_model.choices",
    # running
    "inpaint": "lama_model.pipeline",
    "inpaint_region": "lama_model.pipeline",
    "InpaintOptions": "lama_model.pipeline.options",
    "InpaintResult": "lama_model.pipeline.options",
    "OFFICIAL": "lama_model.pipeline.options",
    "RefineOptions": "lama_model.pipeline.options",
    "RegionResult": "lama_model.pipeline.options",
    # errors, each told in one line (torch-free: catching one loads nothing)
    "BackendError": "lama_model.errors",
    "CheckpointError": "lama_model.errors",
    "DeviceError": "lama_model.errors",
    "PrecisionError": "lama_model.errors",
    "PromptError": "lama_model.errors",
    "RefineError": "lama_model.errors",
    "WeightsError": "lama_model.errors",
}


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = sorted(_PUBLIC)  # served by __getattr__
