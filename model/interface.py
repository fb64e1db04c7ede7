"""The served-model contract: what the pipeline, the factory and the daemon rely on.

Every model that :func:`lama_model.factory.load_for_inference` can return
(:class:`~lama_model.weights.checkpoint.LamaModel`, the optimized model, the GPU model, the
ONNX Runtime model) implements :class:`ServedModel` explicitly, so its users read attributes
instead of probing for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

REFINE_SOURCE = "refine_source"  # the attribute keep_source() writes


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` chose and why, e.g. ``fp32`` because ``bf16 was 0.95x``.

    ``settled``: the winner was clear enough to keep the decision for later starts.
    ``window``: the side of the square window it was measured on, and ``seconds`` each
    measured path's best round there (``fp32`` included); None when nothing was timed.
    """

    precision: str
    reason: str
    settled: bool = True
    window: int | None = None
    seconds: tuple[tuple[str, float], ...] | None = None


class CompileProgress(Protocol):
    """Background compilation per input shape (the GPU model's ``BackgroundCompiler``)."""

    @property
    def ready_shapes(self) -> int: ...

    @property
    def pending_shapes(self) -> int: ...


@runtime_checkable
class ServedModel(Protocol):
    """``model(image[B,3,H,W], mask[B,1,H,W]) → image[B,3,H,W]`` float32 in [0, 1].

    H and W must be multiples of :attr:`size_multiple`. The output may already be
    composited (TorchScript exports are); callers composite again, which is idempotent.
    """

    name: str
    size_multiple: int
    scripted: bool  # a TorchScript graph: float32 only, no backward pass
    choice: PrecisionChoice | None  # why this precision (``auto``), None when not chosen
    compiler: CompileProgress | None  # background compilation, None without

    @property
    def device(self) -> torch.device:
        """Where the model computes."""
        ...

    @property
    def input_device(self) -> torch.device:
        """Where callers should put inputs (the CPU for a model that stages them itself)."""
        ...

    @property
    def precision(self) -> str:
        """``fp32``, ``tf32``, ``fp16`` or ``bf16``."""
        ...

    @property
    def description(self) -> str:
        """The inference path in words, e.g. ``fp32+fused`` or ``onnxruntime:cpu``."""
        ...

    @property
    def refine_generator(self) -> nn.Module | None:
        """The eager generator a refinement runs its backward pass through, or None."""
        ...

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class ServedWrapper(nn.Module):
    """Base of a served model that runs another one (``inner``) differently: where it
    computes, whether it is TorchScript and its eager generator are the inner model's."""

    inner: ServedModel

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def scripted(self) -> bool:
        return self.inner.scripted

    @property
    def refine_generator(self) -> nn.Module | None:
        return self.inner.refine_generator


@dataclass(frozen=True)
class ImageEmbedding:
    """One image encoded by a segmenter (re-exported as ``lama_model.segment.ImageEmbedding``).

    ``features``: the encoder's output (1, C, h, w) on the segmenter's device;
    ``original_size``: the image's (H, W); ``input_size``: its (h, w) once its longest side
    was resized to the model's input size, before padding.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@runtime_checkable
class ServedSegmenter(Protocol):
    """A box or clicks → the object's mask (the Segment Anything family).

    :meth:`embed` runs the image encoder once per image (the slow part); :meth:`predict` runs
    only the prompt encoder and mask decoder, so further prompts on the same image are cheap.
    """

    description: str  # e.g. "mobile-sam (TinyViT-5M), cpu, fp32"
    device: torch.device

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Encode an (H, W, 3) uint8 RGB image of any size; its longest side is resized to
        the model's input size (1024 for SAM) as the official ``SamPredictor`` does."""
        ...

    def predict(
        self,
        embedding: ImageEmbedding,
        box: tuple[float, float, float, float] | None = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """The object's mask, bool (H, W) at the embedded image's size.

        ``box`` is (x0, y0, x1, y1) in image pixels, ``points`` (N, 2) float x, y in image
        pixels, ``labels`` (N,) int: 1 object, 0 background. A single point without a box
        asks for three masks and keeps the one with the highest predicted IoU (SAM's
        guidance for ambiguous prompts); otherwise one mask. Raises
        :class:`lama_model.errors.PromptError` for an empty box, a box outside the image, no
        prompt, more than ``lama_model.segment.MAX_POINTS`` points or labels not 0/1.
        """
        ...


def keep_source(wrapper: nn.Module, generator: nn.Module) -> None:
    """Remember the eager ``generator`` a fast wrapper (e.g. the fused model) was built from.

    Stored as a plain attribute, not a submodule: its weights must not be saved, moved or
    counted twice with the wrapper's.
    """
    wrapper.__dict__[REFINE_SOURCE] = generator


def kept_source(wrapper: nn.Module) -> nn.Module | None:
    """The generator :func:`keep_source` remembered for ``wrapper``, or None."""
    return wrapper.__dict__.get(REFINE_SOURCE)


__all__ = [
    "CompileProgress",
    "ImageEmbedding",
    "PrecisionChoice",
    "ServedModel",
    "ServedSegmenter",
    "ServedWrapper",
    "keep_source",
    "kept_source",
]
