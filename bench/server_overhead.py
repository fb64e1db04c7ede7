"""Round trip through lama-server vs a direct inpaint() call: the cost of transport + protocol.

    python bench/server_overhead.py [--model tiny|big-lama-random|PATH] [--sizes 512,2048]

For each window size it measures, with the same image, mask and options:
- ``direct``: ``lama_model.inpaint.inpaint`` in this process (the model's own time);
- ``stdlib`` / ``pyzmq``: ``LamaClient.inpaint`` round trips to a real lama-server subprocess on
  loopback, with the stdlib ZMTP client and with pyzmq.
Overhead = round trip − direct (medians). Targets (issue 3): < 15 ms at 512², < 5 % of the
model time at 2048². The model is loaded in both processes; each uses 1 thread (the machine has
2 cores: one for the server's model, one for the client), so the numbers compare like with like.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO.parent / "shared" / "fixtures" / "lama-golden" / "tiny-lama"


def big_lama_random(folder: Path) -> Path:
    """A Big LaMa-shaped generator with random weights, saved as a plain state_dict."""
    from lama_model.generator import build_generator

    torch.manual_seed(0)
    path = folder / "big-lama-random.pth"
    torch.save(build_generator("big-lama").state_dict(), path)
    return path


def start_server(model: Path, folder: Path) -> tuple[subprocess.Popen, str, str]:
    token_file = folder / "token"
    env = dict(os.environ, LAMA_TOKEN_FILE=str(token_file), OMP_NUM_THREADS="1")
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lama_server.cli", "--model", str(model), "--device", "cpu",
         "--listen", "tcp://127.0.0.1:*", "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = re.search(r"ready on (\S+)", (folder / "server.log").read_text())
        if found:
            return proc, found.group(1), token_file.read_text().strip()
        if proc.poll() is not None:
            raise SystemExit((folder / "server.log").read_text())
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server not ready")


def sample(size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    s = size // 8
    mask[size // 2 - s : size // 2 + s, size // 2 - s : size // 2 + s] = 255
    return rgba, mask


def measure_size(size: int, model, options, endpoint: str, token: str, runs: int) -> None:
    """Direct call and both clients, interleaved run by run so drift hits all three alike."""
    from lama_model.inpaint import inpaint
    from lama_server.client import ImageData, LamaClient

    rgba, mask = sample(size)
    payload = ImageData(size, size, "RGBA8", rgba.tobytes())
    mask_bytes = mask.tobytes()
    clients = {
        "stdlib": LamaClient(endpoint, token, use_pyzmq=False),
        "pyzmq": LamaClient(endpoint, token, use_pyzmq=True),
    }
    calls = {"direct": lambda: inpaint(model, rgba, mask, options)}
    for name, client in clients.items():
        calls[name] = lambda c=client: c.inpaint(payload, mask_bytes)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(runs + 1):  # the first round is a warm-up
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if i:
                times[name].append(time.perf_counter() - start)
    for client in clients.values():
        client.close()
    direct = statistics.median(times["direct"])
    for name in clients:
        rt = statistics.median(times[name])
        over = rt - direct
        print(
            f"{size:>5}x{size:<4} {direct * 1000:>7.1f}ms {name:>7} {rt * 1000:>9.1f}ms "
            f"{over * 1000:>7.1f}ms {100 * over / direct:>9.1f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, big-lama-random, or a path")
    parser.add_argument("--sizes", default="512,2048")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from lama_model.checkpoint import load_model
    from lama_model.inpaint import InpaintOptions

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.model == "tiny":
            model_path = TINY
        elif args.model == "big-lama-random":
            model_path = big_lama_random(folder)
        else:
            model_path = Path(args.model)
        model = load_model(model_path)
        proc, endpoint, token = start_server(model_path, folder)
        try:
            print(f"model {args.model}, CPU, 1 thread per process, median of {args.runs} runs; "
                  "options: mask_grow 4, feather 4, strategy auto")  # fmt: skip
            print(f"{'window':>10} {'direct':>9} {'client':>7} {'round trip':>11} "
                  f"{'overhead':>9} {'% of model':>10}")  # fmt: skip
            options = InpaintOptions()
            for size in (int(s) for s in args.sizes.split(",")):
                measure_size(size, model, options, endpoint, token, args.runs)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
