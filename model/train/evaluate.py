"""Judge inpainted images as the official LaMa evaluator does: per mask-area bin and in total.

Feed batches of (inpainted, original, mask) to an :class:`Evaluation`; :meth:`Evaluation.results`
gives, for all images and for each mask-area bin that has any ("0-10%" … "90-100%"), LPIPS and
SSIM (mean and standard deviation over the images, as the official ``PairwiseScore``), FID of
the bin's images against their originals (NaN for a bin of one image, as the official
``FIDScore``), and PSNR, which the official evaluator leaves out but a user reads easily.
The totals also carry the official summaries ``ssim_fid100_f1`` (the training monitor) and
``lpips_fid100_f1`` (``bin/evaluate_predicts.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lama_model.train.inception import FIDInceptionV3, load_fid_weights
from lama_model.train.lpips import LPIPS, load_lpips_weights
from lama_model.train.metrics import (
    area_bins,
    bin_name,
    evaluator_ssim,
    frechet_distance,
    lpips_fid100_f1,
    ssim_fid100_f1,
)
from lama_model.train.validate import psnr

#: The per-image scores, in the order the table shows them.
PAIRWISE = ("lpips", "ssim", "psnr")
TOTAL = "total"
#: The downloads (lama_model.weights.downloads) that hold the networks' released weights.
NETWORK_FILES = ("lpips-vgg16", "lpips-vgg-lin", "fid-inception")


@dataclass
class EvaluationNetworks:
    """The two feature networks the metrics need, on one device."""

    lpips: LPIPS
    inception: FIDInceptionV3

    def to(self, device: torch.device) -> EvaluationNetworks:
        self.lpips.to(device)
        self.inception.to(device)
        return self


def released_networks(show_progress: bool = True) -> EvaluationNetworks:
    """The networks with their released weights, downloaded (checksums pinned) on first use.

    Raises :class:`~lama_model.weights.downloads.WeightsError` (one line) offline or on a
    checksum mismatch."""
    from lama_model.weights.downloads import ensure_model

    vgg16, linear, inception = (ensure_model(name, show_progress) for name in NETWORK_FILES)
    return EvaluationNetworks(
        load_lpips_weights(LPIPS(), vgg16, linear),
        load_fid_weights(FIDInceptionV3(), inception),
    )


def installed_networks() -> EvaluationNetworks | None:
    """The released networks if all their files are already in the model cache, else None.

    Training never downloads them (a run must not stall on 600 MB it may not need);
    ``lama-train eval`` does, once.
    """
    from lama_model.weights.downloads import KNOWN_MODELS, model_path

    if not all(model_path(KNOWN_MODELS[name]).is_file() for name in NETWORK_FILES):
        return None
    return released_networks(show_progress=False)


@dataclass
class Evaluation:
    """Accumulates per-image scores and Inception features over batches.

    ``networks=None`` judges by PSNR and SSIM only (LPIPS and FID are NaN): for users who cannot
    download the feature networks; not the paper's judgement."""

    networks: EvaluationNetworks | None
    scores: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in PAIRWISE})
    features_pred: list[np.ndarray] = field(default_factory=list)
    features_target: list[np.ndarray] = field(default_factory=list)
    areas: list[np.ndarray] = field(default_factory=list)

    @torch.no_grad()
    def add(self, inpainted: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> None:
        """One batch: ``(B, 3, H, W)`` images in [0, 1] and ``(B, 1, H, W)`` masks (1 = hole)."""
        networks = self.networks
        device = next(networks.lpips.parameters()).device if networks else inpainted.device
        inpainted, image = inpainted.float().to(device), image.float().to(device)
        self.areas.append(mask.reshape(len(mask), -1).float().mean(-1).cpu().numpy())
        self.scores["ssim"].append(evaluator_ssim(inpainted, image).cpu().numpy())
        self.scores["psnr"].append(psnr(inpainted, image).numpy())
        if networks is None:
            self.scores["lpips"].append(np.full(len(image), np.nan))
            return
        self.scores["lpips"].append(networks.lpips(image, inpainted).cpu().numpy())
        self.features_pred.append(networks.inception(inpainted).cpu().numpy())
        self.features_target.append(networks.inception(image).cpu().numpy())

    def results(self) -> dict[str, dict[str, float]]:
        """``{"total": {...}, "0-10%": {...}, …}``; each holds ``n``, ``fid`` and the mean
        and std of each per-image score (``lpips``, ``lpips_std``, …)."""
        if not self.areas:
            raise ValueError("nothing was evaluated")
        scores = {k: np.concatenate(v).astype(np.float64) for k, v in self.scores.items()}
        with_fid = bool(self.features_pred)
        if with_fid:
            pred, target = np.concatenate(self.features_pred), np.concatenate(self.features_target)
        bins = area_bins(np.concatenate(self.areas))
        groups = {TOTAL: np.arange(len(bins))}
        groups.update({bin_name(b): np.flatnonzero(bins == b) for b in sorted(set(bins.tolist()))})
        out = {}
        for name, index in groups.items():
            row: dict[str, float] = {"n": len(index)}
            for key, values in scores.items():
                row[key] = float(values[index].mean())
                row[f"{key}_std"] = float(values[index].std())  # population std, as the official
            row["fid"] = frechet_distance(pred[index], target[index]) if with_fid else math.nan
            out[name] = row
        total = out[TOTAL]
        # Without FID there is no summary (max(0, 100 − NaN) would make a NaN FID look perfect).
        ssim, lpips, fid = total["ssim"], total["lpips"], total["fid"]
        total["ssim_fid100_f1"] = ssim_fid100_f1(ssim, fid) if with_fid else math.nan
        total["lpips_fid100_f1"] = lpips_fid100_f1(lpips, fid) if with_fid else math.nan
        return out


def format_table(results: dict[str, dict[str, float]], title: str = "") -> str:
    """One row per mask-area bin and the total: LPIPS, FID, PSNR (dB), SSIM."""
    lines = [title] if title else []
    lines.append(f"{'mask area':>10} {'images':>6} {'LPIPS':>8} {'FID':>9} {'PSNR':>7} {'SSIM':>7}")
    shown = _shown
    for name, row in results.items():
        lines.append(
            f"{name:>10} {row['n']:>6} {shown(row['lpips'], 4):>8} {shown(row['fid'], 3):>9} "
            f"{row['psnr']:>7.2f} {row['ssim']:>7.4f}"
        )
    total = results[TOTAL]
    lines.append(
        f"ssim_fid100_f1 {shown(total['ssim_fid100_f1'], 4)}  "
        f"lpips_fid100_f1 {shown(total['lpips_fid100_f1'], 4)}"
    )
    return "\n".join(lines)


def _shown(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


#: What two evaluations must share for their tables to compare row by row.
SAME_SETUP = ("masks", "size", "seed", "images")


def format_comparison(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], title: str = ""
) -> str:
    """One row per mask-area bin both evaluations have: each metric "before → after"."""
    metrics = (("LPIPS", "lpips", 4), ("FID", "fid", 3), ("PSNR", "psnr", 2), ("SSIM", "ssim", 4))
    lines = [title] if title else []
    lines.append(f"{'mask area':>10} {'images':>6} " + " ".join(f"{m[0]:>19}" for m in metrics))
    for name, row in after.items():
        if name in before:
            cells = [f"{_shown(before[name][key], d)} → {_shown(row[key], d)}"
                     for _, key, d in metrics]  # fmt: skip
            lines.append(f"{name:>10} {row['n']:>6} " + " ".join(f"{c:>19}" for c in cells))
    return "\n".join(lines)


def read_json(path: Path) -> dict:
    """A report :func:`write_json` wrote (nulls back to NaN); ValueError (one line) if not."""
    try:
        report = json.loads(path.read_text())
        results = {
            name: {k: math.nan if v is None else v for k, v in row.items()}
            for name, row in report["results"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a lama-train eval report ({type(exc).__name__})") from None
    return {**report, "results": results}


def write_json(results: dict[str, dict[str, float]], path: Path, **about: object) -> None:
    """``results`` (NaN written as null) with what was evaluated, as JSON."""
    clean = {
        name: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for name, row in results.items()
    }
    path.write_text(json.dumps({**about, "results": clean}, indent=2) + "\n")


def evaluation_samples(photos: Path, masks: str, size: int = 256, seed: int = 0) -> list[dict]:
    """Every photo under ``photos``, scaled to ``size`` and centre-cropped, with its mask.

    ``masks``: a mask kind of :mod:`lama_model.train.mask_gen` (``thin``, ``medium``, ``thick``:
    the official evaluation settings; ``large``: the training mix), drawn from
    ``RandomState(seed)``, or a folder of ``size``×``size`` PNG masks (white = hole), given to
    the photos in sorted order (and again from the first when there are fewer masks).
    Raises ValueError (one line) for no photos, no masks or a mask of another size.
    """
    from PIL import Image

    from lama_model.train.data import find_photos, make_validation_set
    from lama_model.train.mask_gen import MASK_KINDS

    folder = Path(masks).expanduser()
    if masks not in MASK_KINDS and not folder.is_dir():
        raise ValueError(f"--masks {masks}: neither {', '.join(MASK_KINDS)} nor a folder")
    count = len(find_photos(photos))
    kind = masks if masks in MASK_KINDS else "large"
    samples = make_validation_set(photos, size=size, count=max(count, 1), seed=seed, mask_kind=kind)
    if masks in MASK_KINDS:
        return samples
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise ValueError(f"{folder}: no PNG masks in this folder")
    for i, sample in enumerate(samples):
        path = files[i % len(files)]
        with Image.open(path) as img:
            if img.size != (size, size):
                raise ValueError(
                    f"{path}: the mask is {img.size[0]}×{img.size[1]}, the photos are evaluated "
                    f"at {size}×{size} (--size)"
                )
            hole = np.asarray(img.convert("L")) > 127
        sample["mask"] = torch.from_numpy(hole[None].astype(np.float32))
    return samples


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module, samples: list[dict], networks: EvaluationNetworks | None,
    batch_size: int = 8, device: torch.device | None = None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Inpaint every sample with ``model`` (``forward(image, mask)``) on ``device`` (default:
    the networks') and judge the results (``networks=None``: PSNR and SSIM only)."""
    evaluation = Evaluation(networks)
    if device is None:
        device = next(networks.lpips.parameters()).device if networks else torch.device("cpu")
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        image = torch.stack([s["image"] for s in chunk]).to(device)
        mask = torch.stack([s["mask"] for s in chunk]).to(device)
        predicted = model(image, mask).float().clamp(0, 1)
        evaluation.add(mask * predicted + (1 - mask) * image, image, mask)
    return evaluation.results()
