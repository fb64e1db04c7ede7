"""Two processes under ``torchrun`` (gloo, CPU) train exactly as one process that sees the same
combined batch.

"The same" needs care: as in the official DDP setup (no SyncBN), every BatchNorm normalises
with the statistics of its own rank's share of the batch, so a single process that pushed the
combined batch of 2·b through each network at once would normalise with other statistics and
legitimately differ. What DDP computes is: each rank's gradient on its b images, averaged. One
process computes exactly that with ``--accumulate 2``: it splits the combined batch into the
two shares the ranks get (DistributedSampler's split: samples r, r+2, …), backpropagates each,
and averages — the same additions in the same order, so the parameters agree **bit for bit**.
Single-threaded kernels on both sides keep the floating-point reductions identical.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import TINY_TRAIN_ARGS

from lama_model.train.cli import main as lama_train

STEPS = "3"


def run(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(run_dir / "models" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == int(STEPS)
    # Parameters only: BatchNorm running statistics are per rank by design (see above).
    return {
        k: v for k, v in saved["state_dict"].items()
        if k.startswith(("generator.", "discriminator.")) and k.endswith((".weight", ".bias"))
    }  # fmt: skip


def test_two_gloo_ranks_equal_one_process_with_the_combined_batch(
    train_photos, tmp_path, one_thread
):
    common = [str(train_photos), *TINY_TRAIN_ARGS, "--steps", STEPS, "--device", "cpu"]
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "lama_model.train.cli", "fit", *common, "--out", str(tmp_path / "ddp")],
        tmp_path)  # fmt: skip
    # The reference runs in this process (one thread, as the ranks), saving two interpreter starts.
    assert lama_train(["fit", *common, "--out", str(tmp_path / "one"), "--accumulate", "2"]) == 0
    ddp, one = params(tmp_path / "ddp"), params(tmp_path / "one")
    assert ddp.keys() == one.keys()
    for key in ddp:
        assert torch.equal(ddp[key], one[key]), (key, (ddp[key] - one[key]).abs().max())

    # Not vacuous: one process with a batch of 2 and no averaging ends elsewhere.
    assert lama_train(["fit", *common, "--out", str(tmp_path / "half")]) == 0
    half = params(tmp_path / "half")
    assert any(not torch.equal(ddp[k], half[k]) for k in ddp)
