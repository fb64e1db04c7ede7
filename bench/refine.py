"""High-resolution refinement: time and peak memory next to plain inference, Big LaMa shape.

    python bench/refine.py [--device cpu|cuda] [--sizes 1024 2048 1536x1152] [--iters 15]
                           [--precision auto|fp32|bf16|fp16] [--compare-fp32] [--threads 2]

Random weights (the shape sets the cost, not the values), a smooth synthetic photo with a
centred box hole (``--hole`` of each side). For every size: one plain forward of the
generator, then the refinement (official settings unless given; above 1.8 MP it runs
downsized to the pixel budget, as the official code). Peak memory: CUDA
``max_memory_allocated``; on CPU the process's peak resident set (``VmHWM``, reset before
each measurement). ``--compare-fp32`` also refines in float32 and reports the PSNR on the
hole of both results against the photo and against each other. Only ``lama_model`` is
imported (runs where ``lama_server``'s dependencies are missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lama_model.accel.precision import psnr
from lama_model.net.generator import build_generator
from lama_model.pipeline import RefineOptions
from lama_model.pipeline.refine import pyramid_sizes, refine
from lama_model.weights.checkpoint import LamaModel

GIB = 1024**3


def parse_size(text: str) -> tuple[int, int]:
    """``1024`` → (1024, 1024); ``1536x1152`` → height 1152, width 1536."""
    if "x" in text:
        w, h = text.lower().split("x")
        return int(h), int(w)
    return int(text), int(text)


def synthetic_photo(h: int, w: int, hole: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth gradients with some texture, and a centred box hole of ``hole`` per side."""
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None, :]
    image = torch.stack([
        0.5 + 0.4 * torch.sin(6.0 * x + 2.0 * y),
        0.5 + 0.3 * torch.cos(9.0 * y) * x,
        0.4 + 0.2 * torch.sin(40.0 * x) * torch.sin(30.0 * y),
    ])[None].clamp(0, 1)  # fmt: skip
    mask = torch.zeros(1, 1, h, w)
    bh, bw = int(h * hole), int(w * hole)
    mask[..., (h - bh) // 2 : (h + bh) // 2, (w - bw) // 2 : (w + bw) // 2] = 1
    return image, mask


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or the process's peak RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            # Writing 5 to clear_refs resets VmHWM (the peak RSS) of this process (Linux).
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated()
        else:
            self.peak_bytes = _vm_hwm()


def _vm_hwm() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # not resettable, but better than nothing off Linux

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(device: torch.device, fn: Callable[[], object]) -> tuple[object, float, int, float]:
    """(result, wall seconds, peak bytes, process CPU seconds) of one call.

    On a shared CPU the wall time depends on the other jobs; the CPU seconds do not (an idle
    machine with N threads needs about CPU seconds / N).
    """
    with PeakMemory(device) as peak:
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    return out, seconds, peak.peak_bytes, cpu_seconds


def hole_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    hole = mask.bool().expand_as(a)
    return psnr(a[hole], b[hole])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    parser.add_argument("--sizes", nargs="+", default=["1024", "2048"], help="N or WxH")
    parser.add_argument("--iters", type=int, default=15, help="n_iters per refined scale")
    parser.add_argument("--min-side", type=int, default=512, help="pyramid rule (official 512)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--no-checkpoint", action="store_true", help="keep all activations")
    parser.add_argument("--channels-last", action="store_true", help="NHWC activations")
    parser.add_argument("--compare-fp32", action="store_true", help="also refine in float32")
    parser.add_argument("--hole", type=float, default=0.4, help="hole side / image side")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    parser.add_argument("--warmup", action="store_true", help="untimed short run first (CUDA)")
    parser.add_argument("--preset", default="big-lama")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    generator = build_generator(args.preset).to(device)
    model = LamaModel(generator, name=f"{args.preset}-random").eval()
    options = RefineOptions(
        n_iters=args.iters,
        min_side=args.min_side,
        precision=args.precision,
        checkpoint=not args.no_checkpoint,
        channels_last=args.channels_last,
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.preset} shape (random weights) on {device} ({name}), torch {torch.__version__}"
          f", {torch.get_num_threads()} threads, refine {options}")  # fmt: skip
    rows = []
    for text in args.sizes:
        row = bench_size(model, device, *parse_size(text), options, args)
        rows.append(row)
        print(_describe(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def bench_size(
    model: LamaModel,
    device: torch.device,
    h: int,
    w: int,
    options: RefineOptions,
    args: argparse.Namespace,
) -> dict:
    """Plain forward and refinement at one size (and float32 refinement if asked)."""
    image, mask = synthetic_photo(h, w, args.hole)
    row: dict = {"size": f"{w}x{h}", "levels": pyramid_sizes(h, w, options), "device": str(device)}
    pad = (0, (-w) % 8, 0, (-h) % 8)
    padded = torch.nn.functional.pad(image.to(device), pad, mode="reflect")
    padded_mask = torch.nn.functional.pad(mask.to(device), pad, mode="reflect")

    def plain() -> torch.Tensor:
        with torch.inference_mode():
            return model(padded, padded_mask)

    if args.warmup or device.type == "cuda":
        plain()
        refine(model, image, mask, dataclasses.replace(options, n_iters=2))
    _, row["plain_s"], row["plain_peak_bytes"], row["plain_cpu_s"] = timed(device, plain)
    result, row["refine_s"], row["refine_peak_bytes"], row["refine_cpu_s"] = timed(
        device, lambda: refine(model, image, mask, options)
    )
    refined = result.image.float().cpu()  # type: ignore[attr-defined]
    del result
    row["psnr_hole_vs_photo"] = hole_psnr(refined, image, mask)
    row["finite"] = bool(torch.isfinite(refined).all())
    if args.compare_fp32:
        fp32 = dataclasses.replace(options, precision="fp32")
        ref, row["fp32_refine_s"], row["fp32_refine_peak_bytes"], _ = timed(
            device, lambda: refine(model, image, mask, fp32)
        )
        ref_image = ref.image.float().cpu()  # type: ignore[attr-defined]
        row["fp32_psnr_hole_vs_photo"] = hole_psnr(ref_image, image, mask)
        row["psnr_hole_vs_fp32"] = hole_psnr(refined, ref_image, mask)
    return row


def _describe(row: dict) -> str:
    levels = " → ".join(f"{w}x{h}" for h, w in row["levels"])
    cpu = row["device"] == "cpu"
    plain_cpu = f" ({row['plain_cpu_s']:.0f} CPU s)" if cpu else ""
    refine_cpu = f" ({row['refine_cpu_s']:.0f} CPU s)" if cpu else ""
    text = (f"{row['size']}: plain forward {row['plain_s']:.2f} s{plain_cpu}, peak "
            f"{row['plain_peak_bytes'] / GIB:.2f} GiB | refine ({levels}) {row['refine_s']:.2f} s"
            f"{refine_cpu}, peak {row['refine_peak_bytes'] / GIB:.2f} GiB, hole PSNR vs photo "
            f"{row['psnr_hole_vs_photo']:.2f} dB")  # fmt: skip
    if not row["finite"]:
        text += " (NON-FINITE OUTPUT)"
    if "fp32_refine_s" in row:
        vs = row["psnr_hole_vs_fp32"]
        text += (f" | fp32 refine {row['fp32_refine_s']:.2f} s, peak "
                 f"{row['fp32_refine_peak_bytes'] / GIB:.2f} GiB, hole PSNR vs photo "
                 f"{row['fp32_psnr_hole_vs_photo']:.2f} dB; refine vs fp32 "
                 f"{'inf' if math.isinf(vs) else f'{vs:.1f}'} dB")  # fmt: skip
    return text


if __name__ == "__main__":
    main()
