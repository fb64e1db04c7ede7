"""Two "machines" (two ``torchrun`` launches, one rank each, on loopback with gloo) train exactly
as one process that sees the same combined batch.

Each launch is what an operator types on one host: ``torchrun --nnodes 2 --node-rank R
--nproc-per-node 1 --master-addr HOST --master-port PORT lama-train fit …``. The rendezvous is
static (node rank given), as on a cluster without etcd; both nodes write to one run folder, as
the README asks (storage every machine sees; rank 0 writes it). The reference and the reason the
parameters agree bit for bit are those of ``test_train_ddp.py``: per-rank BatchNorm, one process
with ``--accumulate 2`` splitting the batch as the ranks do, single-threaded kernels.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import TINY_TRAIN_ARGS
from test_train_ddp import STEPS, params

from lama_model.train.cli import main as lama_train

LAUNCH_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_node(node_rank: int, port: int, fit_args: list[str], cwd: Path) -> subprocess.Popen:
    """One machine's ``torchrun``: one rank, static rendezvous at 127.0.0.1:port."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               GLOO_SOCKET_IFNAME="lo")  # fmt: skip
    args = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
            "--node-rank", str(node_rank), "--nproc-per-node", "1",
            "--master-addr", "127.0.0.1", "--master-port", str(port),
            "-m", "lama_model.train.cli", "fit", *fit_args]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=cwd)  # fmt: skip


def test_two_nodes_on_loopback_equal_one_process_with_the_combined_batch(
    train_photos, tmp_path, one_thread
):
    common = [str(train_photos), *TINY_TRAIN_ARGS, "--steps", STEPS, "--device", "cpu"]
    port = free_port()
    nodes = [launch_node(r, port, [*common, "--out", str(tmp_path / "nodes")], tmp_path)
             for r in (0, 1)]  # fmt: skip
    try:
        outputs = [node.communicate(timeout=LAUNCH_TIMEOUT_S)[0] for node in nodes]
    finally:
        for node in nodes:  # never leave a rank waiting on a rendezvous after a failure
            if node.poll() is None:
                node.kill()
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-4000:]

    assert lama_train(["fit", *common, "--out", str(tmp_path / "one"), "--accumulate", "2"]) == 0
    nodes_params, one = params(tmp_path / "nodes"), params(tmp_path / "one")
    assert nodes_params.keys() == one.keys()
    for key in nodes_params:
        assert (nodes_params[key] == one[key]).all(), key

    # Not vacuous: one process with a batch of 2 and no averaging ends elsewhere.
    assert lama_train(["fit", *common, "--out", str(tmp_path / "half")]) == 0
    half = params(tmp_path / "half")
    assert any(not (nodes_params[k] == half[k]).all() for k in nodes_params)
