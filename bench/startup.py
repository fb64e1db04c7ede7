"""First start of ``lama-server --precision auto`` on a CPU with OpenVINO, phase by phase.

    python bench/startup.py [--threads 2] [--windows 512,128] [--calibration-inputs N]
                            [--quantizer minmax|nncf] [--json out.json]

Big LaMa shape with seeded weights (``bench/speed.py``'s model), an empty model cache in a
temporary folder (``LAMA_CACHE_DIR``), and the server's own call: ``optimize(...,
background=True)``, which serves torch's choice at once and measures OpenVINO in a thread.
Prints when the quick model was ready, then the seconds of each phase of the background
measurement, from the functions the measurement calls (wrapped here for timing only):

- ``conversion``: torch → OpenVINO (``convert_generator``);
- ``calibration``: int8 post-training quantization (``quantize_int8``; ``--quantizer nncf``
  runs NNCF's, the reference, instead of the library's own min/max recipe);
- ``IR cache``: writing and verifying the cached graphs;
- ``compile``: OpenVINO compiling each graph for the CPU (at its first call);
- ``guard``: the quality guard's runs (float32 and each candidate once at the measuring
  window: also their warm-up), less the compile inside;
- ``timing and the rest``: what is left (the interleaved timing rounds, building torch's
  float32 model, Python).

``--windows``: the first start measures on the first window (default: what ``auto`` uses on a
CPU); each further window is one more start on the same cache with the decision deleted
(conversion and calibration cached), which shows what the window alone costs. Issue 20's
budget: calibration and measurement at the first start ≤ 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

PHASES = ("conversion", "calibration", "IR cache", "compile", "guard")


@contextlib.contextmanager
def phase_clock() -> Iterator[tuple[dict[str, float], dict[str, float]]]:
    """Seconds spent in each phase's function while inside (patched back on exit), and each
    guarded path's PSNR on the hole against float32 (by description)."""
    from lama_model.accel import int8_calibration, openvino_ir_cache, openvino_runtime, precision

    spent: dict[str, float] = defaultdict(float)
    targets = [
        (openvino_runtime, "convert_generator", "conversion"),
        (openvino_runtime, "quantize_int8", "calibration"),
        (int8_calibration, "quantize_int8", "calibration"),
        (openvino_ir_cache, "save_ir", "IR cache"),
        (openvino_ir_cache, "load_ir", "IR cache"),
        (openvino_runtime.OpenVinoModel, "_infer_request", "compile"),
        (precision, "reference_output", "guard"),
        (precision, "hole_psnr", "guard"),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
    for owner, name, phase in targets:
        setattr(owner, name, _timed(getattr(owner, name), spent, phase))
    scores: dict[str, float] = {}
    timed_psnr = precision.hole_psnr

    def scored_psnr(expected, candidate, size):
        scores[candidate.description] = timed_psnr(expected, candidate, size)
        return scores[candidate.description]

    precision.hole_psnr = scored_psnr
    try:
        yield spent, scores
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _timed(function: Callable, spent: dict[str, float], phase: str) -> Callable:
    @functools.wraps(function)
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[phase] += time.perf_counter() - start

    return run


def one_start(threads: int, window: int | None) -> dict:
    """The server's ``auto`` start on the current cache: quick model, then the measurement."""
    import torch
    from speed import build_reference

    from lama_model.accel.optimize import optimize

    torch.set_num_threads(threads)
    model = build_reference("cpu")
    with phase_clock() as (spent, scores):
        start = time.perf_counter()
        served = optimize(model, "cpu", background=True, guard_size=window)
        ready = time.perf_counter() - start
        if hasattr(served, "wait"):
            served.wait()
        total = time.perf_counter() - start
    phases = {name: round(spent.get(name, 0.0), 1) for name in PHASES}
    # compile is timed inside the guard's call; keep the phases disjoint
    phases["guard"] = round(phases["guard"] - phases["compile"], 1)
    phases["timing and the rest"] = round(total - ready - sum(phases.values()), 1)
    choice = served.choice
    return {
        "ready_s": round(ready, 1), "measured_s": round(total - ready, 1),
        "total_s": round(total, 1), "phases": phases, "path": served.description,
        "reason": choice.reason if choice else "", "failure": getattr(served, "failure", None),
        "window": choice.window if choice else None,
        "seconds": dict(choice.seconds or ()) if choice else {},
        "hole_psnr_db": {name: round(db, 1) for name, db in scores.items()},
    }  # fmt: skip


def print_start(title: str, row: dict) -> None:
    print(f"{title}: {row['total_s']:.1f} s in all (torch's choice served after "
          f"{row['ready_s']:.1f} s, measurement {row['measured_s']:.1f} s at "
          f"{row['window']}²)", flush=True)  # fmt: skip
    for name, seconds in row["phases"].items():
        print(f"  {name:<20} {seconds:6.1f} s")
    print(f"  chose {row['path']}: {row['reason']}")
    best = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in row["seconds"].items())
    print(f"  best rounds at {row['window']}²: {best or '-'}")
    fp32 = row["seconds"].get("fp32")
    for name, seconds in row["seconds"].items():
        if fp32 and name != "fp32":
            print(f"  {name}: {fp32 / seconds:.2f}x float32's best round")
    quality = ", ".join(f"{name} {db:.1f} dB" for name, db in row["hole_psnr_db"].items())
    print(f"  PSNR on the hole against float32: {quality or '-'}")
    if row["failure"]:
        print(f"  measurement failed: {row['failure']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-inputs", type=int, default=None,
                        help="calibration inputs (default: the library's)")  # fmt: skip
    parser.add_argument("--quantizer", choices=("minmax", "nncf"), default=None,
                        help="int8 calibration method (default: the library's)")  # fmt: skip
    parser.add_argument("--windows", default=None,
                        help="comma list; default: auto's CPU window")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from speed import machine_line

    from lama_model.accel import int8_calibration, optimize
    from lama_server.commands.image_files import replace_through_temporary

    recipe = int8_calibration.RECIPE
    int8_calibration.RECIPE = dataclasses.replace(
        recipe, method=args.quantizer or recipe.method,
        inputs=args.calibration_inputs or recipe.inputs,
    )  # fmt: skip
    os.environ.pop(optimize.AUTO_BACKENDS_ENV, None)  # OpenVINO measured, as a server does
    print(machine_line("cpu"))
    print(f"Big LaMa (seeded weights), {args.threads} threads, empty model cache; "
          f"int8 calibration: {int8_calibration.RECIPE.tag}", flush=True)  # fmt: skip
    windows = [int(w) for w in args.windows.split(",")] if args.windows else [None]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lama-startup-") as cache:
        os.environ["LAMA_CACHE_DIR"] = cache
        for window in windows:
            (Path(cache) / "precision-choices.json").unlink(missing_ok=True)
            rows.append(one_start(args.threads, window))
            title = "IR cached, decision deleted" if len(rows) > 1 else "empty model cache"
            print_start(f"start {len(rows)} ({title})", rows[-1])
    if args.json:
        text = json.dumps(rows, indent=2)
        replace_through_temporary(args.json, lambda temporary: temporary.write_text(text))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
