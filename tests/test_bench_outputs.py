"""Bench scripts that read the user's files never write their results over them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, write_train_photos

BASELINES = REPO / "bench" / "inpaint_baselines.py"


def run_baselines(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BASELINES), *map(str, args)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("target", ["photo", "model"])
def test_baselines_refuse_a_json_path_inside_an_input(tmp_path: Path, target: str):
    """``--json`` naming a held-out photo, or a file in a MODEL folder, is refused in one
    line before anything runs, and the input keeps its bytes."""
    held_out = write_train_photos(tmp_path / "held-out", count=2)
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "last.ckpt").write_bytes(b"a checkpoint")
    victim = next((held_out / "a").iterdir()) if target == "photo" else model_dir / "last.ckpt"
    before = victim.read_bytes()
    out = run_baselines(held_out, f"mine={model_dir}", "--json", victim)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "inside the input" in out.stderr.strip().splitlines()[-1]
    assert victim.read_bytes() == before


def test_baselines_write_their_json_elsewhere(tmp_path: Path):
    """A ``--json`` path outside the inputs gets the results (written whole, then renamed)."""
    held_out = write_train_photos(tmp_path / "held-out", count=2)
    report = tmp_path / "report.json"
    out = run_baselines(held_out, "--masks", "thick", "--seeds", "0", "--size", "64",
                        "--json", report)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(report.read_text())["results"]["thick"]
    assert "mean colour" in results
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
