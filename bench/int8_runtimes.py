"""Which CPU runtime runs Big LaMa fastest, in float32 and int8 (issue 20's survey).

    python bench/int8_runtimes.py [--size 512] [--threads 2] [--rounds 3] [--calibration 4]
                                  [--paths ref,fused,ov_fp32,ov_bf16,ov_int8,torch_int8]

Big LaMa shape with seeded weights (bench/speed.py's ``build_reference``). One process, all
paths timed in interleaved rounds (each round runs every path once), speed-up = median of the
per-round ratios against the official float32 eager generator (``ref``) of the same round;
PSNR on the hole against ``ref``'s output. Rows:

- ``fused``: this project's float32 fused model (the default on a CPU without native bf16);
- ``ov_fp32`` / ``ov_bf16`` / ``ov_int8``: ``--backend openvino`` in that precision
  (converted from the torch generator; int8 by the backend's post-training calibration,
  :mod:`lama_model.accel.int8_calibration`, NNCF's until issue 20's start-up work; FFTs in
  float32; bf16 only where native). Their graphs are cached in the model cache
  (``$LAMA_CACHE_DIR``), so a second run skips conversion and calibration;
- ``torch_int8``: torch's x86 int8 (pt2e ``X86InductorQuantizer`` + ``torch.compile``):
  needs a C++ compiler; its compile time is printed.

Set ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` for the AVX2-laptop case (torch's
kernels; whether OpenVINO's CPU plug-in honours ``ONEDNN_MAX_CPU_ISA`` was not checked).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speed import build_reference, machine_line, sample  # noqa: E402

PATHS = ("ref", "fused", "ov_fp32", "ov_bf16", "ov_int8", "torch_int8")


def openvino_path(ref, size: int, precision: str):
    """``--backend openvino --precision`` ``precision``, built as the backend builds it (the
    converted and calibrated graph is cached in the model cache: later runs skip that)."""
    from lama_model.accel.openvino_runtime import openvino_model

    t0 = time.perf_counter()
    served = openvino_model(ref, precision)
    served(*sample(size))  # compiles
    print(f"  ({precision}: convert/quantize (or read the cache) + compile "
          f"{time.perf_counter() - t0:.1f} s)", flush=True)  # fmt: skip
    return served


def calibration_input(size: int, seed: int) -> tuple:
    """The calibration images ``--backend openvino`` uses, at ``size``."""
    from lama_model.accel.int8_calibration import calibration_inputs

    return calibration_inputs(seed + 1, size)[seed]


def torch_int8_path(ref, size: int, calibration: int):
    """torch's pt2e x86 int8 path, compiled by inductor."""
    from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torch.ao.quantization.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    from lama_model.accel.onnx import CompositeGenerator

    module = CompositeGenerator(ref.net).eval()
    image, mask = sample(size)
    t0 = time.perf_counter()
    exported = torch.export.export(module, (image, mask)).module()
    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    for seed in range(calibration):
        prepared(*(torch.from_numpy(a) for a in calibration_input(size, seed)))
    converted = convert_pt2e(prepared)
    compiled = torch.compile(converted)
    with torch.no_grad():
        compiled(image, mask)
    print(f"  (torch_int8: quantize+compile {time.perf_counter() - t0:.1f} s)", flush=True)
    return compiled


def build(name: str, ref, size: int, calibration: int):
    from lama_model.accel.optimize import OptimizedModel

    if name == "ref":
        return ref
    if name == "fused":
        return OptimizedModel(ref, fuse=True)
    if name == "torch_int8":
        return torch_int8_path(ref, size, calibration)
    return openvino_path(ref, size, name[3:])


def psnr_hole(expected: torch.Tensor, got: torch.Tensor, mask: torch.Tensor) -> float:
    hole = (mask > 0.5).expand_as(expected)
    mse = float(((expected - got.float()) ** 2)[hole].mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1 / mse)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=4, help="torch_int8's inputs")
    parser.add_argument("--paths", default="ref,fused,ov_fp32,ov_int8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line("cpu"), flush=True)
    names = [n for n in args.paths.split(",") if n]
    unknown = sorted(set(names) - set(PATHS))
    if unknown:
        raise SystemExit(f"unknown path(s) {', '.join(unknown)}; known: {', '.join(PATHS)}")
    names = ["ref"] + [n for n in names if n != "ref"]
    ref = build_reference("cpu")
    runs = {name: build(name, ref, args.size, args.calibration) for name in names}
    image, mask = sample(args.size)
    times: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for name, run in runs.items():  # warm-up, and the output for the PSNR
            out = run(image, mask)
            outputs[name] = mask * out.float() + (1 - mask) * image
        for _ in range(args.rounds):
            for name, run in runs.items():
                t0 = time.perf_counter()
                run(image, mask)
                times[name].append(time.perf_counter() - t0)
    print(f"{args.size}², {args.threads} threads, {args.rounds} interleaved rounds")
    for name in names:
        ratios = [r / t for r, t in zip(times["ref"], times[name], strict=True)]
        quality = psnr_hole(outputs["ref"], outputs[name], mask) if name != "ref" else None
        shown = "ref" if quality is None else f"{quality:.1f} dB"
        print(f"{name:<14} median {statistics.median(times[name]):6.2f} s  "
              f"vs ref {statistics.median(ratios):5.2f}x  PSNR hole {shown}", flush=True)


if __name__ == "__main__":
    main()
