"""The served-model contract: what the pipeline, the factory and the daemon rely on.

Every model that :func:`lama_model.factory.load_for_inference` can return
(:class:`~lama_model.weights.checkpoint.LamaModel`, the optimized model, the GPU model, the
ONNX Runtime model) implements :class:`ServedModel` explicitly, so its users read attributes
instead of probing for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

REFINE_SOURCE = "refine_source"  # the attribute keep_source() writes


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` chose and why, e.g. ``fp32`` because ``bf16 was 0.95x``.

    ``settled``: the timings were steady enough to keep the decision for later starts.
    """

    precision: str
    reason: str
    settled: bool = True


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
    "PrecisionChoice",
    "ServedModel",
    "ServedWrapper",
    "keep_source",
    "kept_source",
]
