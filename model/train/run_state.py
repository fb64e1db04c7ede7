"""Run folders in the official layout, and checkpoints that resume a run exactly.

A run folder is what the official ``bin/train.py`` leaves and what the released ``big-lama``
folder is: ``config.yaml`` plus ``models/last.ckpt`` (written every ``save_every`` steps, at
the end, and when Ctrl-C stops the run) and ``models/best.ckpt`` (the best validation
``ssim_fid100_f1`` so far, the official monitor, or SSIM where FID cannot be computed), with
``models/best.json`` beside it saying which step that is and why. A checkpoint is a
Lightning-style dict whose ``state_dict`` holds ``generator.*``, ``discriminator.*`` and
``loss_resnet_pl.*``; beside it: both Adam states, the step, and the best metric. Everything in
it is a tensor or a plain container, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lama_model.weights.checkpoint import CheckpointError, read_checkpoint_file, state_mismatches

FORMAT_VERSION = 1
PREFIXES = ("generator", "discriminator", "loss_resnet_pl")


def models_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "models"


def last_path(run_dir: str | Path) -> Path:
    return models_dir(run_dir) / "last.ckpt"


def best_path(run_dir: str | Path) -> Path:
    return models_dir(run_dir) / "best.ckpt"


def best_note_path(run_dir: str | Path) -> Path:
    return models_dir(run_dir) / "best.json"


# Why best.ckpt holds the step it holds; step 0's validation only measures the starting weights
# (Lightning's sanity check), so a later, lower SSIM can be best: the note says so.
BEST_RULE = (
    "the highest validation SSIM (val.csv) of the trained steps so far; step 0's validation "
    "measures the starting weights as a baseline and is never a candidate"
)
#: The official monitor (``val_ssim_fid100_f1_total_mean``, mode max); needs the FID network.
MONITOR_F1 = "val_ssim_fid100_f1"
MONITOR_SSIM = "val_ssim"
BEST_RULE_F1 = (
    "the highest validation ssim_fid100_f1 (val.csv) of the trained steps so far, the official "
    "LaMa monitor: 2·SSIM·r/(SSIM + r + 0.001) with r = max(0, 100 − FID)/100, SSIM and FID as "
    "the official evaluator computes them on the validation images; step 0's validation "
    "measures the starting weights as a baseline and is never a candidate"
)
#: Why SSIM alone chose, when it did.
NO_FID = (
    "; FID could not be computed, so SSIM alone chose (SSIM favours blur): the evaluation "
    "networks are not installed (`lama-train eval` downloads them once)"
)


def write_best_note(
    run_dir: str | Path, step: int, metrics: Mapping[str, float], metric: str = MONITOR_SSIM
) -> None:
    """Write ``models/best.json``: the step ``best.ckpt`` holds, its validation metrics, why.

    ``metric`` is :data:`MONITOR_F1` (``metrics`` has ``ssim_fid100_f1``) or
    :data:`MONITOR_SSIM`."""
    path = best_note_path(run_dir)
    official = metric == MONITOR_F1
    note = {
        "step": step,
        "metric": metric,
        "value": float(metrics["ssim_fid100_f1" if official else "ssim"]),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "why": BEST_RULE_F1 if official else BEST_RULE + NO_FID,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Progress:
    """Where a run stands: the number of finished optimiser steps and the best metric."""

    step: int = 0
    best_val_ssim: float = -math.inf
    #: the monitored value of best.ckpt and its name (MONITOR_F1 or MONITOR_SSIM)
    best_score: float = -math.inf
    best_metric: str = MONITOR_SSIM


def build_state_dict(modules: Mapping[str, nn.Module | None]) -> dict[str, torch.Tensor]:
    """``{"generator": G, …}`` → one flat state_dict with the official prefixes (CPU copies)."""
    state: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        if module is None:
            continue
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.detach().to("cpu", copy=True)
    return state


def save_checkpoint(
    path: str | Path,
    modules: Mapping[str, nn.Module | None],
    optimizers: Mapping[str, torch.optim.Optimizer],
    progress: Progress,
) -> None:
    """Write a checkpoint atomically (a crash mid-write leaves the previous file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": build_state_dict(modules),
        "optimizer_states": [_cpu(opt.state_dict()) for opt in optimizers.values()],
        "optimizer_names": list(optimizers),
        "global_step": progress.step,
        "lama_train": {
            "format": FORMAT_VERSION,
            "best_val_ssim": progress.best_val_ssim,
            "best_score": progress.best_score,
            "best_metric": progress.best_metric,
        },
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _cpu(obj):
    """Optimiser state with every tensor on the CPU, containers kept plain."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_cpu(v) for v in obj)
    return obj


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; :class:`CheckpointError` on anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    obj = read_checkpoint_file(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: not a LaMa training checkpoint (no state_dict)")
    return obj


def split_state(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Flat state_dict → one dict per prefix (``generator``, ``discriminator``, …)."""
    parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in PREFIXES}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        if prefix in parts and torch.is_tensor(value):
            parts[prefix][rest] = value
    return parts


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module``, naming missing, unexpected and mis-shaped keys."""
    problems = state_mismatches(module.state_dict(), state)
    if problems:
        raise CheckpointError(f"{what} weights do not fit: " + "; ".join(problems))
    module.load_state_dict(dict(state), strict=True)


def init_checkpoint_path(source: str | Path) -> Path:
    """The checkpoint to fine-tune from: a run or release folder's best, or a ``.ckpt`` file."""
    source = Path(source).expanduser()
    if source.is_dir():
        for candidate in (best_path(source), last_path(source)):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{source}: no models/best.ckpt or models/last.ckpt in this folder")
    if source.is_file():
        return source
    raise CheckpointError(f"{source}: no such file or folder")
