"""What a round trip through lama-server costs beyond the server's own work.

    python bench/server_overhead.py [--model tiny|big-lama-random|PATH]
                                    [--sizes 512,1024,2048,6000x4000] [--runs 7]
                                    [--strategy crop] [--json out.json]

A real ``lama-server`` subprocess on loopback, one request at a time, for each window size,
client transport (``stdlib``: the plugins' built-in ZMTP client; ``pyzmq``) and way of
passing pixels (``file``: a pixel file in the server's folder, protocol 1.2; ``inline``:
inside the messages). The reply's ``timing.total_ms`` is the server's own time for the
request (queue + decode + model + compositing); **overhead = round trip − total_ms**: the
client's encoding, the hello, the transport through the token gate and ZeroMQ, the reply and
the client's decoding. It does not depend on the model's speed, so it is measured here on the
CPU with the tiny model and carries over to a GPU server, where the model takes milliseconds.

Each process uses one thread (the machine may have two cores). The runs are interleaved
(every combination once per round) so that drift hits them alike. Prints the CPU flags that
matter for the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import start_server  # noqa: E402  (bench/ is not a package)

TINY = REPO.parent / "shared" / "fixtures" / "lama-golden" / "tiny-lama"


def big_lama_random(folder: Path) -> Path:
    """A Big LaMa-shaped generator with random weights, saved as a plain state_dict."""
    from lama_model.net.generator import build_generator

    torch.manual_seed(0)
    path = folder / "big-lama-random.pth"
    torch.save(build_generator("big-lama").state_dict(), path)
    return path


def sample(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise with a 96×96 hole in the middle (a small object in a large photo)."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 2 - 48 : h // 2 + 48, w // 2 - 48 : w // 2 + 48] = 255
    return rgba, mask


def parse_size(text: str) -> tuple[int, int]:
    """``1024`` (square) or ``6000x4000`` (width × height)."""
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        return platform.processor() or "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512"


def measure_size(size: tuple[int, int], endpoint: str, token: str, args) -> list[dict]:
    from lama_client.client import ImageData, LamaClient

    w, h = size
    label = f"{w}²" if w == h else f"{w}×{h}"
    rgba, mask = sample(w, h)
    image = ImageData(w, h, "RGBA8", rgba.tobytes())
    mask_bytes = mask.tobytes()
    options = {"strategy": args.strategy}

    def make(transport: str, pixels: str) -> LamaClient:
        return LamaClient(endpoint, token, use_pyzmq=transport == "pyzmq",
                          pixel_files=pixels != "inline", timeout=600)  # fmt: skip

    # "file, new client": a client (and so a pixel file) per request, as the plug-ins do.
    kinds = [(t, p) for t in ("stdlib", "pyzmq") for p in ("file", "inline")]
    kinds.append(("stdlib", "file, new client"))
    kept = {k: make(*k) for k in kinds if "new" not in k[1]}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {k: [] for k in kinds}
    answers = {}
    for i in range(args.runs + 1):  # the first round is a warm-up
        for key in kinds:
            start = time.perf_counter()
            client = kept.get(key) or make(*key)
            answers[key] = client.inpaint(image, mask_bytes, options).data
            round_trip = (time.perf_counter() - start) * 1000
            if key[1] != "inline" and not client.last_used_pixel_file:
                raise SystemExit("the server did not take the pixel file")
            if i:
                samples[key].append((round_trip, client.last_timing["total_ms"]))
            if key not in kept:
                client.close()
    for client in kept.values():
        client.close()
    if len(set(answers.values())) != 1:
        raise SystemExit("the answers differ between transports")
    rows = []
    for (transport, pixels), runs in samples.items():
        rt = statistics.median(r for r, _ in runs)
        server = statistics.median(s for _, s in runs)
        over = statistics.median(r - s for r, s in runs)
        rows.append({"size": label, "client": transport, "pixels": pixels, "round_trip_ms": rt,
                     "server_ms": server, "overhead_ms": over,
                     "overhead_min_ms": min(r - s for r, s in runs)})  # fmt: skip
        print(f"{label:>9} {transport:>7} {pixels:>16} {rt:>10.1f} {server:>10.1f} {over:>9.1f} "
              f"{rows[-1]['overhead_min_ms']:>8.1f}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, big-lama-random, or a path")
    parser.add_argument("--sizes", default="1024,2048")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--strategy",
        default="crop",
        help="crop (default: the model sees a small window) or original",
    )
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.model == "tiny":
            model_path = TINY
        elif args.model == "big-lama-random":
            model_path = big_lama_random(folder)
        else:
            model_path = Path(args.model)
        proc, endpoint, token, _ = start_server(
            folder, model_path, "--device", "cpu", "--log-level", "warning",
            env={"OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        try:
            print(f"model {args.model}, strategy {args.strategy}, CPU flags: {cpu_flags()}, "
                  f"load {os.getloadavg()[0]:.2f}, medians of {args.runs} runs (ms)")  # fmt: skip
            print(f"{'window':>9} {'client':>7} {'pixels':>16} {'round trip':>10} "
                  f"{'server':>10} {'overhead':>9} {'min':>8}")  # fmt: skip
            rows = []
            for size in (parse_size(s) for s in args.sizes.split(",")):
                rows += measure_size(size, endpoint, token, args)
        finally:
            proc.terminate()
            proc.wait(30)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
