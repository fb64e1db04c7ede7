"""``--checkpoint best|last|PATH`` on ``lama-inpaint`` and ``lama-server`` serves the run
folder's checkpoint the user named, and says in one line when it is not there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN_ARGS, start_server
from PIL import Image

from lama_model.train.cli import main as lama_train
from lama_model.weights.checkpoint import load_model, model_source
from lama_server.commands import exit_codes
from lama_server.commands.inpaint import main as lama_inpaint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_with_older_best(train_photos, tmp_path_factory) -> Path:
    """A 4-step tiny run whose best.ckpt holds its step-2 weights and last.ckpt step 4's."""
    run = tmp_path_factory.mktemp("runs") / "run"
    argv = ["fit", str(train_photos), "--out", str(run), *TINY_TRAIN_ARGS, "--steps", "2"]
    assert lama_train(argv) == 0
    at_two = run.parent / "at_two.ckpt"
    shutil.copy(run / "models" / "best.ckpt", at_two)
    assert lama_train(["fit", "--resume", "--out", str(run), "--steps", "4"]) == 0
    shutil.copy(at_two, run / "models" / "best.ckpt")
    return run


def generator_weights(source) -> dict[str, torch.Tensor]:
    return load_model(source).generator.state_dict()


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_names_choose_best_last_or_a_file(run_with_older_best):
    run = run_with_older_best
    best = generator_weights(model_source(run, "best"))
    last = generator_weights(model_source(run, "last"))
    assert not same_weights(best, last)
    assert same_weights(best, generator_weights(run))  # the default is best
    assert same_weights(last, generator_weights(model_source(run, "models/last.ckpt")))
    assert same_weights(best, generator_weights(model_source(run, str(run / "models/best.ckpt"))))


def inpaint(tmp_path: Path, *extra: str) -> tuple[int, np.ndarray | None]:
    rng = np.random.RandomState(1)
    Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 20:48] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    out.unlink(missing_ok=True)
    code = lama_inpaint([str(tmp_path / "photo.png"), str(tmp_path / "mask.png"), "-o", str(out),
                         "--device", "cpu", "--quiet", *extra])  # fmt: skip
    return code, np.asarray(Image.open(out)) if out.is_file() else None


def test_lama_inpaint_serves_the_checkpoint_asked_for(run_with_older_best, tmp_path):
    run = str(run_with_older_best)
    code_best, best = inpaint(tmp_path, "--model", run, "--checkpoint", "best")
    code_last, last = inpaint(tmp_path, "--model", run, "--checkpoint", "last")
    code_default, default = inpaint(tmp_path, "--model", run)
    assert code_best == code_last == code_default == 0
    assert np.array_equal(best, default) and not np.array_equal(best, last)


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_checkpoint_best_before_any_validation_is_a_one_line_error(
    run_with_older_best, tmp_path, capsys
):
    run = tmp_path / "stopped"
    shutil.copytree(run_with_older_best, run)
    (run / "models" / "best.ckpt").unlink()
    capsys.readouterr()
    code, out = inpaint(tmp_path, "--model", str(run), "--checkpoint", "best")
    line = one_error_line(capsys.readouterr().err)
    assert code != 0 and out is None
    assert "no models/best.ckpt" in line and "--checkpoint last" in line, line


@pytest.mark.parametrize(
    ("model", "checkpoint", "says"),
    [("big-lama", "last", "needs --model to be a run folder"),
     ("RUN", "missing.ckpt", "no such file")],
)  # fmt: skip
def test_checkpoint_that_is_not_there_is_a_one_line_error(
    run_with_older_best, tmp_path, capsys, model, checkpoint, says
):
    model = str(run_with_older_best) if model == "RUN" else model
    capsys.readouterr()
    code, out = inpaint(tmp_path, "--model", model, "--checkpoint", checkpoint)
    line = one_error_line(capsys.readouterr().err)
    assert code != 0 and out is None and says in line, line


def test_lama_server_serves_the_checkpoint_asked_for(run_with_older_best, tmp_path):
    server = start_server(tmp_path, run_with_older_best, "--checkpoint", "last", "--no-warmup")
    try:
        assert "last.ckpt" in server.log()
    finally:
        assert server.stop() == 0


def test_lama_server_with_a_missing_checkpoint_exits_with_the_configuration_code(
    run_with_older_best, tmp_path
):
    run = tmp_path / "stopped"
    shutil.copytree(run_with_older_best, run)
    (run / "models" / "best.ckpt").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "lama_server.commands.serve", "--model", str(run), "--checkpoint",
         "best", "--device", "cpu", "--listen", "tcp://127.0.0.1:*", "--token-file",
         str(tmp_path / "token")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == exit_codes.CONFIG, proc.stderr
    assert "--checkpoint last" in one_error_line(proc.stderr)


def test_lama_train_eval_with_a_missing_checkpoint_is_a_one_line_error(
    run_with_older_best, train_photos, tmp_path, capsys
):
    run = tmp_path / "stopped"
    shutil.copytree(run_with_older_best, run)
    (run / "models" / "best.ckpt").unlink()
    capsys.readouterr()
    code = lama_train(["eval", str(run), str(train_photos), "--checkpoint", "best",
                       "--size", "64", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "no models/best.ckpt" in err and "--checkpoint last" in err, err
