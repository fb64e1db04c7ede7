"""Validation on a fixed set of images and masks: PSNR and SSIM of the inpainted result.

As the official evaluator does, the metrics are computed on the *inpainted* image (the
generator's output pasted into the hole, known pixels kept), with the generator in eval mode.
Like the official validation step, it also reports the generator's reconstruction loss
``gen_l1`` (known pixels, weight 10) on the raw prediction.
SSIM is the standard one (Wang et al. 2004): 11×11 Gaussian window, σ 1.5, K1 0.01, K2 0.03,
data range 1, valid-region mean per image, averaged over channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


def psnr(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Per-image PSNR in dB of ``(B, C, H, W)`` tensors in [0, 1]."""
    mse = (pred.detach().cpu().double() - target.detach().cpu().double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / (mse + eps))


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    window = torch.outer(g, g).to(device=device, dtype=dtype)
    return window.expand(channels, 1, size, size).contiguous()


def ssim(
    pred: torch.Tensor, target: torch.Tensor, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Per-image SSIM of ``(B, C, H, W)`` tensors in [0, 1] (valid-region mean).

    Computed in float64 on the CPU: in float32, ``E[x²] − E[x]²`` loses the small variances
    that SSIM compares (errors of 1e-4 on flat images)."""
    pred, target = pred.detach().cpu().double(), target.detach().cpu().double()
    channels = pred.shape[1]
    window = _gaussian_window(window_size, sigma, channels, pred.device, pred.dtype)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(pred), blur(target)
    sigma_x = blur(pred * pred) - mu_x**2
    sigma_y = blur(target * target) - mu_y**2
    sigma_xy = blur(pred * target) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    )
    return ssim_map.flatten(1).mean(1)


class Judge(Protocol):
    """Also scores the inpainted images (:class:`lama_model.train.evaluate.Evaluation` does)."""

    def add(self, inpainted: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> None: ...


@torch.no_grad()
def evaluate(
    generator: nn.Module,
    samples: Sequence[dict[str, torch.Tensor]],
    device: torch.device,
    batch_size: int = 8,
    autocast_dtype: torch.dtype | None = None,
    l1_weight_known: float = 10.0,
    l1_weight_missing: float = 0.0,
    judge: Judge | None = None,
) -> dict[str, float]:
    """Mean PSNR and SSIM of the inpainted images over ``samples``.

    ``samples`` are dicts with ``image`` (3×H×W) and ``mask`` (1×H×W, 1 = hole). The generator
    is put in eval mode for the pass and returned to the mode it was in. ``judge``, if given,
    is handed every batch of inpainted images too (for LPIPS and FID).
    """
    was_training = generator.training
    generator.eval()
    from lama_model.train.losses import masked_l1

    psnrs, ssims, l1s = [], [], []
    try:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            image = torch.stack([s["image"] for s in chunk]).to(device)
            mask = torch.stack([s["mask"] for s in chunk]).to(device)
            with torch.autocast(
                device.type,
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
            ):
                predicted = generator(torch.cat([image * (1 - mask), mask], dim=1))
            predicted = predicted.float()
            l1 = masked_l1(predicted, image, mask, l1_weight_known, l1_weight_missing)
            l1s.append(l1.expand(len(chunk)))
            inpainted = mask * predicted + (1 - mask) * image
            psnrs.append(psnr(inpainted, image))
            ssims.append(ssim(inpainted, image))
            if judge is not None:
                judge.add(inpainted, image, mask)
    finally:
        generator.train(was_training)
    return {
        "psnr": float(torch.cat(psnrs).mean()) if psnrs else float("nan"),
        "ssim": float(torch.cat(ssims).mean()) if ssims else float("nan"),
        "gen_l1": float(torch.cat(l1s).mean()) if l1s else float("nan"),
    }
