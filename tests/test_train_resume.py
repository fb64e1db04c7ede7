"""``lama-train fit --resume`` keeps the run's records straight: a run killed between two
saves logs each step once after resuming, and asking for fewer steps than done is refused
before anything in the run folder changes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_ARGS

from lama_model.train.cli import main as lama_train

pytestmark = pytest.mark.usefixtures("one_thread")


def fit(photos: Path, out: Path, steps: int) -> None:
    code = lama_train(["fit", str(photos), "--out", str(out), *TINY_TRAIN_ARGS,
                       "--steps", str(steps)])  # fmt: skip
    assert code == 0


def resume(out: Path, steps: int) -> int:
    return lama_train(["fit", "--resume", "--out", str(out), "--steps", str(steps),
                       "--no-progress"])  # fmt: skip


def logged_steps(run: Path) -> list[int]:
    with (run / "train.csv").open(newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_resume_after_a_kill_logs_each_step_once(train_photos, tmp_path):
    """Steps 3-4 were logged but their checkpoint never written (the process was killed):
    resuming from step 2 trains them again and train.csv keeps one row per step."""
    run = tmp_path / "run"
    fit(train_photos, run, 2)
    at_two = tmp_path / "at_two.ckpt"
    shutil.copy(run / "models" / "last.ckpt", at_two)
    assert resume(run, 4) == 0
    assert logged_steps(run) == [1, 2, 3, 4]
    shutil.copy(at_two, run / "models" / "last.ckpt")  # as if killed before saving step 4
    assert resume(run, 4) == 0
    assert logged_steps(run) == [1, 2, 3, 4]


def test_resume_below_the_current_step_is_a_one_line_error(train_photos, tmp_path, capsys):
    run = tmp_path / "run"
    fit(train_photos, run, 3)
    config_before = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert resume(run, 2) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "step 3" in err and "--steps" in err, err
    assert (run / "config.yaml").read_text() == config_before
