"""Reduced-precision inference (bf16/fp16 autocast) behind a quality guard.

The Fourier transforms stay in float32 (see :class:`lama_model.ffc.FourierUnit`); everything
else runs in the chosen dtype through ``torch.autocast``. ``auto`` only keeps a reduced
precision if its output stays within :data:`MIN_PSNR_DB` of float32 on this device.
"""

from __future__ import annotations

import math

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MIN_PSNR_DB = 40.0
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class PrecisionError(ValueError):
    """The requested precision cannot run on this device."""


class AutocastModel(nn.Module):
    """Runs a model's forward under autocast; same interface as the wrapped model."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = model
        self.dtype = dtype
        self.name = getattr(model, "name", "model")
        self.size_multiple = getattr(model, "size_multiple", 8)

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.inner(image, mask).float()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two [0, 1] tensors, in dB (inf if equal)."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def quality_guard(reference: nn.Module, candidate: nn.Module, size: int = 256) -> float:
    """PSNR of ``candidate`` against ``reference`` on a seeded random input (NaN → -inf)."""
    device = reference.device
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen).to(device)
    mask = (torch.rand(1, 1, size, size, generator=gen) > 0.6).float().to(device)
    with torch.inference_mode():
        expected = reference(image, mask)
        got = candidate(image, mask)
    if not torch.isfinite(got).all():
        return -math.inf
    return psnr(expected, got)


def apply_precision(
    model: nn.Module, device: torch.device, precision: str
) -> tuple[nn.Module, str]:
    """Wrap ``model`` for ``precision``; returns the model to use and the precision in force."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return model, "fp32"
    if precision == "auto":
        if device.type != "cuda":
            return model, "fp32"  # CPU autocast is slower than fp32 on most CPUs
        choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        candidate = AutocastModel(model, DTYPES[choice])
        if quality_guard(model, candidate) >= MIN_PSNR_DB:
            return candidate, choice
        return model, "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise PrecisionError("fp16 needs a GPU; on CPU use fp32 or bf16")
    return AutocastModel(model, DTYPES[precision]), precision
