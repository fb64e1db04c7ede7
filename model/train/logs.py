"""What a run shows while it trains: CSV loss logs, TensorBoard (if installed), preview grids.

``train.csv`` gets one row per logged step (``step``, ``images``, ``seconds``, then each loss
component under its official name); ``val.csv`` one row per validation. Resumed runs append,
after dropping the rows of steps past the checkpoint they resume from (a run killed between
two saves logged steps that the resumed run trains again).
Previews are PNGs in ``samples/``: one row per image, columns masked input (hole in grey),
output (the generator's raw prediction), inpainted, target.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

LOG = logging.getLogger(__name__)


class CsvLog:
    """Append rows to a CSV file whose columns are fixed by the first row written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.is_file() and path.stat().st_size:
            with path.open(newline="") as f:
                self.columns = next(csv.reader(f), None)

    def drop_rows_after(self, step: int) -> None:
        """Remove the rows whose ``step`` is past ``step``: the resumed run logs them again."""
        if self.columns is None or "step" not in self.columns:
            return
        column = self.columns.index("step")
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))[1:]
        kept = [r for r in rows if len(r) > column and int(float(r[column])) <= step]
        if len(kept) == len(rows):
            return
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows([self.columns, *kept])
        tmp.replace(self.path)

    def write(self, row: Mapping[str, float | int | str]) -> None:
        if self.columns is None:
            self.columns = list(row)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self.columns])


def _fmt(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value


class RunLog:
    """CSV files plus, when the ``tensorboard`` package is installed, a TensorBoard writer."""

    def __init__(
        self, run_dir: Path, tensorboard: bool = True, resumed_at: int | None = None
    ) -> None:
        """``resumed_at``: the step of the checkpoint a resumed run continues from; the CSV
        rows logged after it are dropped so that no step appears twice."""
        self.run_dir = run_dir
        self.train = CsvLog(run_dir / "train.csv")
        self.val = CsvLog(run_dir / "val.csv")
        if resumed_at is not None:
            self.train.drop_rows_after(resumed_at)
            self.val.drop_rows_after(resumed_at)
        self.writer = _tensorboard_writer(run_dir / "tb") if tensorboard else None

    def log_train(self, step: int, values: Mapping[str, float], **extra: float) -> None:
        self.train.write({"step": step, **extra, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, step)

    def log_val(self, step: int, values: Mapping[str, float]) -> None:
        self.val.write({"step": step, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"val/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: pip install "lama-inpaint[tensorboard]"
        return None
    return SummaryWriter(str(folder))


def preview_grid(
    image: torch.Tensor, mask: torch.Tensor, predicted: torch.Tensor, rows: int = 4
) -> np.ndarray:
    """uint8 H×W×3 grid: per image, masked input | output | inpainted | target (2-px gutters)."""
    image, mask, predicted = (
        t[:rows].detach().float().cpu().clamp(0, 1) for t in (image, mask, predicted)
    )
    masked = image * (1 - mask) + 0.5 * mask
    inpainted = mask * predicted + (1 - mask) * image
    columns = [masked, predicted, inpainted, image]
    n, _, h, w = image.shape
    gap = 2
    grid = np.full((n * h + (n - 1) * gap, 4 * w + 3 * gap, 3), 255, np.uint8)
    for r in range(n):
        for c, tensor in enumerate(columns):
            tile = (tensor[r].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            y, x = r * (h + gap), c * (w + gap)
            grid[y : y + h, x : x + w] = tile
    return grid


def save_preview(path: Path, grid: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
