"""Latency and peak memory of the Big LaMa generator (random weights) per input size.

    python bench/generator_latency.py [--sizes 256,512,1024] [--runs 3] [--device cpu|cuda]

Each size runs in a fresh subprocess so its peak memory is its own (CPU: the process's peak
resident set; CUDA: torch.cuda.max_memory_allocated). Compare with the official code's figures
in ../shared/fixtures/lama-golden/PERF-BASELINE.md (same machine kind, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(size: int, runs: int, device: str, threads: int) -> dict:
    import torch

    from lama_model.net.generator import build_generator

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_generator("big-lama").to(device)
    x = torch.rand(1, 4, size, size, device=device)
    times = []
    with torch.inference_mode():
        for i in range(runs + 1):  # the first run is a warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "size": size,
        "runs": runs,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "peak_mib": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512,1024")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.runs, args.device, args.threads)))
        return
    print(
        f"Big LaMa generator, random weights, {args.device}, {args.threads} threads, "
        f"median of {args.runs} runs after one warm-up"
    )
    print(f"{'input':>10} {'median':>9} {'min':>8} {'max':>8} {'peak mem':>10}")
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(size),
                "--runs",
                str(args.runs),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        unit = "MiB GPU" if args.device == "cuda" else "MiB RSS"
        print(
            f"{size:>5}x{size:<4} {r['median_s']:>8.3f}s {r['min_s']:>7.3f}s "
            f"{r['max_s']:>7.3f}s {r['peak_mib']:>7.0f} {unit}"
        )


if __name__ == "__main__":
    main()
