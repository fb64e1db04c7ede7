"""Select-object latency: MobileSAM's image encoder per window size, its decoder per prompt.

    python bench/segment.py [--sizes 256,512,1024] [--runs 3] [--prompts 10] [--threads 2]
                            [--device cpu|cuda|all] [--weights mobile-sam|PATH]
                            [--runtimes torch,openvino] [--json]

Full-size MobileSAM (TinyViT-5M + SAM decoder) with random weights unless ``--weights`` names
the release (cached, or downloaded) or a checkpoint file; timings do not depend on the
weights. SAM resizes every window's longest side to 1024 and pads it to 1024², so the encoder
always runs on 1024²: what varies with the window size is only the resize before it (and the
mask's resize back after the decoder). The decoder time is one ``predict`` (prompt encoder,
two-way transformer, upscaling, mask back to the window's size) per box prompt, then per
single-point prompt (three masks).

Each figure is wall-clock time, then, in brackets, CPU time of the whole process: on a machine
shared with other jobs the CPU time grows much less than the wall-clock time. Run with
OMP_WAIT_POLICY=PASSIVE for the CPU time to count work only (idle threads otherwise spin).

``--runtimes torch,openvino`` times the image encoder's runtimes (see
lama_model.segment.encoder_runtime) against each other: each measurement takes the runtimes
in turn, so on a busy machine their ratio still means something when the times do not. The
first OpenVINO run converts the encoder (tens of seconds; cached in the model cache).

The issue's target on 2 CPU threads: encoder ≤ 1 s for a 1024² window, decoder ≤ 50 ms per
prompt. Run it on a quiet machine; the figures quoted in model/segment/__init__.py came from a
busy one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def build(weights: str | None, device: str, runtime: str):
    import torch

    from lama_model.segment.config import MOBILE_SAM
    from lama_model.segment.loader import load_segmenter
    from lama_model.segment.net import build_segmenter
    from lama_model.segment.predictor import SegmentPredictor

    if weights:
        return load_segmenter(weights, device, runtime)
    torch.manual_seed(0)  # the same weights for every runtime (and one OpenVINO cache entry)
    model = build_segmenter(MOBILE_SAM)
    return SegmentPredictor(model, torch.device(device), "mobile-sam (random weights)", runtime)


def interleaved(calls: dict, runs: int, device: str) -> dict[str, tuple[float, float]]:
    """Per name, median wall-clock and median process CPU seconds of ``runs`` calls after
    one warm-up, the calls taken in turn (a, b, a, b, …) so that each sees the same load.

    On a machine shared with other jobs the wall-clock time grows with their load; the CPU
    time (all threads of this process together) grows much less, so the pair tells a slow
    machine from a slow model; only ratios within one run compare runtimes."""
    import torch

    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in calls}
    for i in range(runs + 1):
        for name, call in calls.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            call()
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                times[name][0].append(time.perf_counter() - start)
                times[name][1].append(time.process_time() - cpu_start)
    return {n: (statistics.median(w), statistics.median(c)) for n, (w, c) in times.items()}


def measure(segmenters: dict, size: int, args, device: str) -> list[dict]:
    """One row per runtime: encoder and decoder times on a size × 3/4·size window."""
    import numpy as np

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size * 3 // 4, 3), dtype=np.uint8)
    embeddings = {name: s.embed(image) for name, s in segmenters.items()}
    box = (size * 0.2, size * 0.2, size * 0.5, size * 0.6)
    point = {"points": np.array([[size * 0.3, size * 0.4]]), "labels": np.array([1])}
    items = segmenters.items()
    encoder = interleaved({n: lambda s=s: s.embed(image) for n, s in items}, args.runs, device)
    box_decoder = interleaved(
        {n: lambda s=s, e=embeddings[n]: s.predict(e, box=box) for n, s in items},
        args.prompts, device,
    )  # fmt: skip
    point_decoder = interleaved(
        {n: lambda s=s, e=embeddings[n]: s.predict(e, **point) for n, s in items},
        args.prompts, device,
    )  # fmt: skip
    return [
        {
            "device": device, "runtime": name, "description": segmenters[name].description,
            "window": f"{image.shape[0]}x{image.shape[1]}",
            "encoder_s": encoder[name][0], "encoder_cpu_s": encoder[name][1],
            "decoder_box_ms": 1000 * box_decoder[name][0],
            "decoder_box_cpu_ms": 1000 * box_decoder[name][1],
            "decoder_point_ms": 1000 * point_decoder[name][0],
            "decoder_point_cpu_ms": 1000 * point_decoder[name][1],
        }  # fmt: skip
        for name in segmenters
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512,1024", help="window heights (width is 3/4)")
    parser.add_argument("--runs", type=int, default=3, help="encoder runs per size")
    parser.add_argument("--prompts", type=int, default=10, help="decoder runs per prompt kind")
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)"
    )
    parser.add_argument(
        "--device", default="all", help="cpu, cuda, or all (cpu and cuda if present)"
    )
    parser.add_argument("--weights", default=None, help="mobile-sam (the release) or a checkpoint")
    parser.add_argument(
        "--runtimes", default="torch",
        help="image-encoder runtimes to time against each other, interleaved: a comma list "
        "of torch, openvino (CPU only; the openvino extra), auto",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    devices = (
        [args.device]
        if args.device != "all"
        else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    rows = []
    for device in devices:
        runtimes = args.runtimes.split(",") if device == "cpu" else ["torch"]
        segmenters = {runtime: build(args.weights, device, runtime) for runtime in runtimes}
        for size in args.sizes.split(","):
            rows += measure(segmenters, int(size), args, device)
    if args.json:
        print(json.dumps({"threads": args.threads, "results": rows}, indent=1))
        return
    print(
        f"MobileSAM, {args.threads} CPU threads; the encoder always runs on 1024² (see docstring)"
    )
    for description in dict.fromkeys(r["description"] for r in rows):
        print(f"  {description}")
    print(
        f"{'device':6} {'runtime':>8} {'window':>10} {'encoder s':>10} {'box ms':>8} "
        f"{'point ms':>9}  (CPU)"
    )
    for r in rows:
        print(
            f"{r['device']:6} {r['runtime']:>8} {r['window']:>10} {r['encoder_s']:>10.3f} "
            f"{r['decoder_box_ms']:>8.1f} {r['decoder_point_ms']:>9.1f}  "
            f"({r['encoder_cpu_s']:.3f} s, {r['decoder_box_cpu_ms']:.1f} ms, "
            f"{r['decoder_point_cpu_ms']:.1f} ms)"
        )


if __name__ == "__main__":
    main()
