"""Which CPU runtime runs Big LaMa fastest, in float32 and int8 (issue 20's survey).

    python bench/int8_runtimes.py [--size 512] [--threads 2] [--rounds 3] [--calibration 4]
                                  [--paths ref,fused,ov_fp32,ov_int8,ov_int8_bf16,torch_int8]

Big LaMa shape with seeded weights (bench/speed.py's ``build_reference``). One process, all
paths timed in interleaved rounds (each round runs every path once), speed-up = median of the
per-round ratios against the official float32 eager generator (``ref``) of the same round;
PSNR on the hole against ``ref``'s output. Rows:

- ``fused``: this project's float32 fused model (the default on a CPU without native bf16);
- ``ov_fp32`` / ``ov_bf16``: OpenVINO, model converted from the torch generator
  (``openvino.convert_model``), inference precision f32 / bf16 (bf16 only where native);
- ``ov_int8`` / ``ov_int8_bf16``: the same after NNCF post-training quantization (int8
  convolutions, per-channel weights; the FFTs are not quantizable and stay float);
- ``torch_int8``: torch's x86 int8 (pt2e ``X86InductorQuantizer`` + ``torch.compile``):
  needs a C++ compiler; its compile time is printed.

Set ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (torch) and ``--ov-isa avx2``
(OpenVINO caps its kernels through the same ONEDNN variable) for the AVX2-laptop case.
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

PATHS = ("ref", "fused", "ov_fp32", "ov_bf16", "ov_int8", "ov_int8_bf16", "torch_int8")


def openvino_path(ref, size: int, precision: str, calibration: int):
    """An OpenVINO compiled model for ``precision`` (f32, bf16, int8, int8_bf16); a callable."""
    import openvino as ov

    t0 = time.perf_counter()
    model = converted(ref, size)
    if precision.startswith("int8"):
        import nncf

        inputs = [calibration_input(size, seed) for seed in range(calibration)]
        model = nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs))
    hint = "bf16" if precision.endswith("bf16") else "f32"
    config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": torch.get_num_threads(),
              "PERFORMANCE_HINT": "LATENCY"}  # fmt: skip
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    print(f"  ({precision}: convert+quantize+compile {time.perf_counter() - t0:.1f} s)", flush=True)

    def run(image, mask):
        result = request.infer({0: image.numpy(), 1: mask.numpy()})
        return torch.from_numpy(result[0].copy())

    return run


_CONVERTED: dict = {}


def converted(ref, size: int):
    """The OpenVINO model converted from the torch generator (once per run)."""
    import openvino as ov

    from lama_model.accel.onnx import CompositeGenerator

    if "model" not in _CONVERTED:
        t0 = time.perf_counter()
        with torch.no_grad():
            module = CompositeGenerator(ref.net).eval()
            _CONVERTED["model"] = ov.convert_model(module, example_input=sample(size))
        print(f"  (convert_model {time.perf_counter() - t0:.1f} s)", flush=True)
    return _CONVERTED["model"].clone()


def calibration_input(size: int, seed: int) -> tuple:
    """A synthetic photo-like image (smooth gradients + noise) and a box mask."""
    gen = torch.Generator().manual_seed(100 + seed)
    low = torch.rand(1, 3, size // 32, size // 32, generator=gen)
    image = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")
    image = (image + 0.05 * torch.randn(1, 3, size, size, generator=gen)).clamp(0, 1)
    mask = torch.zeros(1, 1, size, size)
    y, x = (torch.randint(0, size // 2, (2,), generator=gen)).tolist()
    mask[..., y : y + size // 3, x : x + size // 3] = 1
    return image.numpy(), mask.numpy()


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
    return openvino_path(ref, size, name[3:], calibration)


def psnr_hole(expected: torch.Tensor, got: torch.Tensor, mask: torch.Tensor) -> float:
    hole = (mask > 0.5).expand_as(expected)
    mse = float(((expected - got.float()) ** 2)[hole].mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1 / mse)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=4)
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
