"""ONNX exports of Big LaMa on CPU runtimes: the DFT operator against the DFT as matrix products.

    python bench/export_runtimes.py [--size 512] [--rounds 3] [--threads 2] [--keep DIR]

Big LaMa architecture with seeded random weights (``bench/speed.py``'s ``build_reference``),
exported twice (``lama-inpaint export``'s two ``--dft`` choices): ``operator`` (dynamic size,
ONNX ``DFT``) and ``matmul`` (fixed ``--size``, matrix products). Rows, run in turn each
round (interleaved, so a loaded machine slows every row alike):

- ``torch``: the float32 eager generator (the official code path), the reference;
- ``ort-operator``: ONNX Runtime CPU on the DFT-operator export (``--backend onnxruntime``);
- ``ort-matmul``: ONNX Runtime CPU on the matmul export;
- ``openvino-matmul``: OpenVINO CPU on the matmul export, float32; ``openvino-operator`` too,
  were OpenVINO to run the DFT-operator export (2026.4 does not: the script prints why).

Prints per row the median latency, the median and range of the per-round ratios against
``torch`` and the largest absolute difference from ``torch``'s output. ``--keep DIR`` keeps
the two ONNX files there and reuses them on the next run (an export of Big LaMa takes
minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from speed import build_reference, sample  # bench/speed.py: the same seeded model and input


def export_both(folder: Path, size: int) -> dict[str, Path]:
    """The DFT-operator and matmul exports of the seeded Big LaMa (reused when present)."""
    from lama_model.accel.onnx import export_onnx

    files = {"operator": folder / "big-lama-operator.onnx"}
    files["matmul"] = folder / f"big-lama-matmul-{size}.onnx"
    for dft, path in files.items():
        if path.is_file():
            continue
        t0 = time.perf_counter()
        export_onnx(build_reference("cpu"), path, sample_size=size, dft=dft)
        print(f"(export --dft {dft}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return files


def openvino_runner(path: Path, threads: int):
    """A callable running the ONNX file on OpenVINO's CPU plug-in in float32, or the reason
    it cannot."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    try:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    except RuntimeError as exc:
        return " ".join(str(exc).split())[-120:]
    return lambda image, mask: compiled({"image": image, "mask": mask})[0]


def runners(files: dict[str, Path], threads: int) -> dict:
    """Row name → ``(image, mask) → output`` (NumPy float32) callables."""
    import torch

    from lama_model.accel.onnx import OnnxRuntimeModel

    torch.set_num_threads(threads)
    reference = build_reference("cpu")

    def torch_run(image, mask):
        with torch.inference_mode():
            image_t, mask_t = torch.from_numpy(image), torch.from_numpy(mask)
            return (mask_t * reference(image_t, mask_t) + (1 - mask_t) * image_t).numpy()

    rows = {"torch": torch_run}
    for dft, path in files.items():
        session = OnnxRuntimeModel(path, providers=["CPUExecutionProvider"], threads=threads)
        rows[f"ort-{dft}"] = lambda i, m, s=session: s.session.run(None, {"image": i, "mask": m})[0]
    for dft, path in files.items():
        run = openvino_runner(path, threads)
        if callable(run):
            rows[f"openvino-{dft}"] = run
        else:
            print(f"(openvino-{dft}: does not compile: {run})")
    return rows


def measure(rows: dict, size: int, rounds: int) -> dict[str, dict]:
    """Interleaved rounds: each row once per round after one warm-up each."""
    import numpy as np

    image_t, mask_t = sample(size)
    image, mask = image_t.numpy(), mask_t.numpy()
    outputs = {}
    for name, run in list(rows.items()):  # warm-up; a runtime may refuse only when it runs
        try:
            outputs[name] = run(image, mask)
        except RuntimeError as exc:
            print(f"({name}: fails to run: {' '.join(str(exc).split())[-120:]})", flush=True)
            del rows[name]
    stats = {name: {"times": [], "diff": 0.0} for name in rows}
    for _ in range(rounds):
        for name, run in rows.items():
            t0 = time.perf_counter()
            outputs[name] = run(image, mask)
            stats[name]["times"].append(time.perf_counter() - t0)
        for name in rows:
            diff = float(np.abs(outputs[name] - outputs["torch"]).max())
            stats[name]["diff"] = max(stats[name]["diff"], diff)
    return stats


def report(stats: dict[str, dict]) -> None:
    base = stats["torch"]["times"]
    print(f"{'row':<18}{'median s':>10}{'vs torch':>10}{'spread':>14}{'max |diff|':>12}")
    for name, row in stats.items():
        ratios = [b / t for b, t in zip(base, row["times"], strict=True)]
        spread = f"{min(ratios):.2f}–{max(ratios):.2f}×"
        print(
            f"{name:<18}{statistics.median(row['times']):>10.3f}"
            f"{statistics.median(ratios):>9.2f}×{spread:>14}{row['diff']:>12.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square side, a multiple of 8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="folder for the ONNX files")
    args = parser.parse_args()
    print(f"size {args.size}², {args.threads} threads, {args.rounds} rounds, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lama-export-bench-") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        rows = runners(export_both(folder, args.size), args.threads)
        report(measure(rows, args.size, args.rounds))


if __name__ == "__main__":
    main()
