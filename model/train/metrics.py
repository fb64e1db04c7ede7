"""The official LaMa evaluator's rules: its SSIM, FID's distance, mask-area bins, F1 monitors.

Each function says which part of ``saicinpainting/evaluation`` it equals. The networks are in
:mod:`lama_model.train.lpips` and :mod:`lama_model.train.inception`; the per-bin evaluation
that uses all of them is :mod:`lama_model.train.evaluate`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: The official evaluator's mask-area bins: ``np.linspace(0, 1, 11)``, named "0-10%" … "90-100%".
AREA_BINS = 10
#: ``ssim_fid100_f1`` and ``lpips_fid100_f1``: an FID of 100 or more counts as the worst.
FID_SCALE = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def evaluator_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM as the official ``SSIMScore``: ``(B, C, H, W)`` in [0, 1] → ``(B,)``.

    Unlike :func:`lama_model.train.validate.ssim` (the textbook valid-region SSIM in float64),
    the evaluator pads each 11×11 Gaussian window with zeros (``padding=5``), averages the
    whole map, and works in float32; the published numbers are made so, hence this copy.
    """
    pred, target = pred.float(), target.float()
    channels = pred.shape[1]
    offsets = [(x - SSIM_WINDOW // 2) ** 2 for x in range(SSIM_WINDOW)]
    gauss = torch.tensor([math.exp(-d / float(2 * SSIM_SIGMA**2)) for d in offsets])
    gauss = (gauss / gauss.sum()).unsqueeze(1)
    window = gauss.mm(gauss.t()).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()
    window = window.to(pred.device)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=SSIM_WINDOW // 2, groups=channels)

    mu1, mu2 = blur(pred), blur(target)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = blur(pred * pred) - mu1_sq
    sigma2_sq = blur(target * target) - mu2_sq
    sigma12 = blur(pred * target) - mu1_mu2
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
    )
    return ssim_map.mean(1).mean(1).mean(1)


def covariance_factor(features: np.ndarray) -> np.ndarray:
    """A matrix ``A`` with ``A.T @ A`` = the sample covariance of ``features`` (N×D rows).

    With fewer samples than dimensions the centred rows (divided by √(N−1)) are such a
    factor; otherwise the symmetric square root of the D×D covariance is.
    """
    n, d = features.shape
    centred = features.astype(np.float64) - features.astype(np.float64).mean(0)
    if n <= d:
        return centred / math.sqrt(n - 1)
    values, vectors = np.linalg.eigh(centred.T @ centred / (n - 1))
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(pred: np.ndarray, target: np.ndarray) -> float:
    """FID between two sets of Inception features (N×2048 each), NaN for fewer than 2.

    The official ``calculate_frechet_distance`` computes ``tr sqrtm(Σ₁Σ₂)`` with SciPy's
    ``sqrtm`` on 2048×2048 matrices: 74 s per call on two cores, and noisy when N < 2048 makes
    Σ singular. The trace needs only the singular values of ``A₁ A₂ᵀ`` for covariance
    factors ``Σᵢ = Aᵢᵀ Aᵢ`` (its nuclear norm), which is exact, fast and agrees with the
    official value to float32 round-off (tests/test_eval_metrics.py).
    """
    if len(pred) < 2 or len(target) < 2:
        return float("nan")
    diff = pred.astype(np.float64).mean(0) - target.astype(np.float64).mean(0)
    factor_pred, factor_target = covariance_factor(pred), covariance_factor(target)
    trace_sqrt = np.linalg.svd(factor_pred @ factor_target.T, compute_uv=False).sum()
    traces = (factor_pred**2).sum() + (factor_target**2).sum()
    return float(diff @ diff + traces - 2 * trace_sqrt)


def area_bins(mask_area: np.ndarray) -> np.ndarray:
    """Bin index (0 … 9) of each mask's hole fraction, as the official ``InpaintingEvaluator``.

    A fraction on an edge goes to the bin above (``side='right'``), a full mask to the last.
    (The online evaluator used during official training puts an edge in the bin below; the
    published tables come from ``bin/evaluate_predicts.py``, i.e. this rule.)
    """
    edges = np.linspace(0, 1, AREA_BINS + 1)
    bins = np.searchsorted(edges, mask_area, side="right") - 1
    bins[bins == AREA_BINS] = AREA_BINS - 1
    return bins


def bin_name(index: int) -> str:
    """The official name of an area bin: ``"0-10%"`` … ``"90-100%"``."""
    return f"{index * 100 // AREA_BINS}-{(index + 1) * 100 // AREA_BINS}%"


def ssim_fid100_f1(ssim: float, fid: float) -> float:
    """The official training monitor (``val_ssim_fid100_f1_total_mean``, higher is better)."""
    fid_rel = max(0.0, FID_SCALE - fid) / FID_SCALE
    return 2 * ssim * fid_rel / (ssim + fid_rel + 1e-3)


def lpips_fid100_f1(lpips: float, fid: float) -> float:
    """The official ``evaluate_predicts.py`` summary: LPIPS inverted, combined with FID."""
    neg_lpips = 1 - lpips
    fid_rel = max(0.0, FID_SCALE - fid) / FID_SCALE
    return 2 * neg_lpips * fid_rel / (neg_lpips + fid_rel + 1e-3)
