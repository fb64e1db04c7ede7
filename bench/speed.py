"""Side-by-side speed of the float32 eager reference and every fast inference path.

    python bench/speed.py [--sizes 256,512,1024] [--runs 3] [--rounds 1] [--device cpu|cuda]
                          [--paths ref,channels_last,...] [--threads 2] [--json out.json]
                          [--isa avx2]

Big LaMa architecture with seeded random weights (BatchNorm statistics randomised so it is
not the identity). Rows: ``ref`` is the official generator's own code path (our float32
eager generator, unfused: the same operations as advimman/lama), so every speed-up is read
against it in one run; ``auto`` is what ``--precision auto`` picks on this machine (measured
afresh, not from the cache); ``fused`` is ``fp32+fused``; ``bf16_fused`` the native bf16
fused model (weights cast once, channels-last, FFTs and output layer in float32);
``openvino_fp32`` / ``openvino_int8`` / ``openvino_bf16`` are ``--backend openvino`` (the
``[openvino]`` extra; bf16 only where native); their converted and calibrated graphs are
cached in the model cache, so only their first row pays for conversion in ``1st run``.

Each (path, size) runs in a fresh subprocess, so its peak memory is its own (CPU: VmHWM
from /proc/self/status; CUDA: torch.cuda.max_memory_allocated). Median over ``--runs``
after one warm-up; speed-up and PSNR on the hole are against the reference of the same
round. ``--rounds N`` runs all paths in turn N times (interleaved, so a loaded machine slows
every path alike) and prints the spread. The first line names the CPU, its bf16 features
and the load average. ``--isa avx2`` sets ATEN_CPU_CAPABILITY=avx2 and
ONEDNN_MAX_CPU_ISA=AVX2 in every child, so a BF16 or AMX machine measures the AVX2-laptop case.
OpenVINO's CPU plug-in takes ONEDNN_MAX_CPU_ISA for its own kernels too (2026.4); each OpenVINO
row is checked by the kernel names of its compiled graph, and one that ran a kernel above the
cap (avx512, amx, vnni) is reported as not capped instead of as a row.
Compare with the official code's CPU figures in
../shared/fixtures/lama-golden/PERF-BASELINE.md only on the same CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CPU_PATHS = (
    "ref",
    "auto",
    "fused",
    "bf16_fused",
    "channels_last",
    "jit_freeze",
    "compile",
    "onnxruntime",
    "bf16",
    "openvino_fp32",
    "openvino_int8",
    "openvino_bf16",
)
# emulated bf16 is ~40x slower (torch), or silently float32 (OpenVINO): skipped there
NATIVE_BF16_ONLY = ("bf16", "bf16_fused", "openvino_bf16")
OPENVINO_PATHS = ("openvino_fp32", "openvino_int8", "openvino_bf16")  # need the extra
GPU_PATHS = (
    "ref",
    "auto",
    "fused",
    "bf16_fused",
    "channels_last",
    "fp16",
    "bf16",
    "bf16_graphs",
    "fused_bf16_graphs",
    "compile_bf16",
    "onnxruntime",
)


def build_reference(device: str):  # -> LamaModel
    """Big LaMa with seeded random weights and non-trivial BatchNorm statistics."""
    import torch

    from lama_model.net.generator import build_generator
    from lama_model.weights.checkpoint import LamaModel

    torch.manual_seed(0)
    net = build_generator("big-lama")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return LamaModel(net, name="big-lama-random").to(device).eval()


def sample(size: int):
    """Seeded image and a mask of a few boxes (about a quarter of the frame)."""
    import torch

    gen = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, size, size, generator=gen)
    mask = torch.zeros(1, 1, size, size)
    for y, x, h, w in ((0.1, 0.1, 0.3, 0.2), (0.5, 0.4, 0.25, 0.45), (0.2, 0.6, 0.2, 0.15)):
        mask[..., int(y * size) : int((y + h) * size), int(x * size) : int((x + w) * size)] = 1
    return image, mask


def build_path(name: str, device: str, onnx_file: str | None):
    """The model for one path name; returns (model, description)."""

    from lama_model.accel.onnx import OnnxRuntimeModel
    from lama_model.accel.optimize import OptimizedModel

    if name == "onnxruntime":
        assert onnx_file
        model = OnnxRuntimeModel(
            onnx_file, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
        return model, model.description
    if name in OPENVINO_PATHS:
        return openvino_row(name, device)
    ref = build_reference(device)
    if name == "ref":
        return ref, "official code path: float32 eager generator, unfused"
    if name == "auto":
        from lama_model.accel.optimize import optimize

        chosen = optimize(ref, device, cache=False)
        return chosen, f"--precision auto -> {chosen.description} ({chosen.choice.reason})"
    if name == "fused":
        fast = OptimizedModel(ref, fuse=True)
        kernels = "Winograd F(4,3) blocks" if device == "cpu" else "cuDNN"
        return fast, f"fp32 fused (BN folded, conv+add+ReLU, {kernels})"
    if name == "bf16_fused":
        fast = OptimizedModel(ref, precision="bf16", fuse=True)
        return fast, "bf16 fused, native (weights cast once, FFTs + output layer float32)"
    if name == "fused_bf16_graphs":
        return OptimizedModel(ref, precision="bf16", fuse=True, bucket=64, cuda_graphs=True), (
            "bf16 fused CUDA graphs/64"
        )
    if name == "channels_last":
        return OptimizedModel(ref, channels_last=True), "fp32 channels_last"
    if name == "jit_freeze":
        return frozen(ref, device), "fp32 trace+freeze+optimize_for_inference (oneDNN prepack)"
    if name == "compile":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold weights, prepack oneDNN convs
        return OptimizedModel(ref, compile=True), "fp32 torch.compile(inductor, freezing)"
    if name == "compile_bf16":
        return OptimizedModel(ref, precision="bf16", channels_last=True, compile=True, bucket=64), (
            "bf16 channels_last compile/64"
        )
    if name in ("fp16", "bf16"):
        model = OptimizedModel(ref, precision=name, channels_last=device == "cuda")
        return model, f"{name} autocast"
    if name == "bf16_graphs":
        return OptimizedModel(
            ref, precision="bf16", channels_last=True, bucket=64, cuda_graphs=True
        ), "bf16 channels_last CUDA graphs/64"
    raise SystemExit(f"unknown path {name!r}")


def frozen(ref, device: str):
    """``ref`` traced, frozen and optimized for inference by TorchScript."""
    import torch

    image, mask = sample(64)
    with torch.no_grad():
        traced = torch.jit.trace(ref, (image.to(device), mask.to(device)), check_trace=False)
        ref.net = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    ref.scripted = True
    return ref


def openvino_row(name: str, device: str):
    """``--backend openvino`` in one precision (its graph cached in the model cache)."""
    from lama_model.accel.openvino_runtime import openvino_model

    model = openvino_model(build_reference(device), name.split("_")[1])
    return model, f"--backend openvino --precision {model.precision}"


def peak_mib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # non-Linux fallback: peak RSS (kB on Linux/BSD, bytes on macOS)

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(args: argparse.Namespace) -> dict:
    """Child process: one path at one size; writes the composited output to ``--out``."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    device = args.device
    start = time.perf_counter()
    model, description = build_path(args.path, device, args.onnx)
    image, mask = sample(args.one)
    image, mask = image.to(device), mask.to(device)
    times = []
    with torch.inference_mode():
        for i in range(args.runs + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(image, mask)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            if i == 0:
                first = time.perf_counter() - start
    out = (mask * out.float() + (1 - mask) * image).cpu().numpy()
    np.save(args.out, out)
    return {
        "path": args.path,
        "description": description,
        "size": args.one,
        "median_s": statistics.median(times[1:]),
        "min_s": min(times[1:]),
        "first_s": first,  # build + compile + first run
        "peak_mib": round(peak_mib(device), 1),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # proves --isa reached it
        "above_cap": kernels_above_cap(model),
    }


# Kernel-name parts of instruction sets above AVX2 (oneDNN's and OpenVINO's CPU kernels).
ABOVE_AVX2 = ("avx512", "amx", "vnni", "avx10")
# Kernels on integer shape values, not image data: OpenVINO's Reduce kernel for the Fourier
# units' normalisation (ReduceProd of the shape, jit_avx2_i32) stayed at the CPU's own level
# under ONEDNN_MAX_CPU_ISA=SSE41 while every float and int8 kernel dropped to sse42.
SHAPE_KERNELS = ("_i32", "_i64")


def kernels_above_cap(model) -> list[str] | None:
    """For an OpenVINO row under ``--isa``: the kernels it ran that the cap should have
    excluded (empty: the cap held, as far as the kernel names tell); None for other rows.

    OpenVINO has no documented switch of its own for this: ``OV_CPU_MAX_ISA`` is a debug
    build option in 2026.4 (setting it in a release wheel changed only which AVX2
    convolution kernel ran, so it is not set), while its CPU plug-in takes oneDNN's
    ``ONEDNN_MAX_CPU_ISA`` for its own kernels too, except for integer shape arithmetic
    (:data:`SHAPE_KERNELS`, ignored here). Each run checks rather than trusts that.
    """
    import os

    if not os.environ.get("ONEDNN_MAX_CPU_ISA") or not hasattr(model, "kernels"):
        return None
    compute = [k for k in model.kernels() if not k.lower().endswith(SHAPE_KERNELS)]
    return sorted(k for k in compute if any(part in k.lower() for part in ABOVE_AVX2))


def psnr_hole(ref, got, mask) -> float:
    import numpy as np

    if not np.isfinite(got).all():
        return float("-inf")
    hole = np.broadcast_to(mask > 0.5, ref.shape)
    mse = float(np.mean((ref[hole] - got[hole]) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def export_for_bench(device: str, folder: Path) -> str:
    from lama_model.accel.onnx import export_onnx

    path = folder / "big-lama-random.onnx"
    t0 = time.perf_counter()
    export_onnx(build_reference("cpu"), path)
    print(f"(ONNX export of Big LaMa: {time.perf_counter() - t0:.0f} s)", flush=True)
    return str(path)


def run_one(args: argparse.Namespace, name: str, size: int, folder: Path, onnx_file) -> dict:
    """One path at one size in a fresh process (its peak memory is its own)."""
    out_file = folder / f"{name}-{size}.npy"
    cmd = [sys.executable, __file__, "--one", str(size), "--path", name, "--runs",
           str(args.runs), "--device", args.device, "--threads", str(args.threads),
           "--out", str(out_file)]  # fmt: skip
    if onnx_file:
        cmd += ["--onnx", onnx_file]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args.isa))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        reason = (proc.stderr.strip().splitlines() or ["?"])[-1][:80]
        return {"path": name, "size": size, "error": reason}
    row = json.loads(lines[-1][len("RESULT ") :])
    row["out_file"] = str(out_file)
    return row


# What ``--isa`` sets for each child: torch's own kernels and oneDNN's, capped together (issue 20).
ISA_CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def child_env(isa: str | None) -> dict[str, str]:
    """The environment of a measuring child: this one, with the instruction set capped."""
    import os

    env = dict(os.environ)
    env.update(ISA_CAPS.get(isa or "", {}))
    return env


def print_row(row: dict) -> None:
    speed = f"{row['speedup']:.2f}x" if row["speedup"] else "-"
    quality = row["psnr_hole_db"]
    quality_s = (
        "ref" if row["path"] == "ref" else ("inf" if quality == float("inf") else f"{quality:.1f}")
    )
    print(
        f"{row['size']:>5} {row['path']:<14} {row['median_s']:>7.3f}s {row['min_s']:>6.3f}s "
        f"{speed:>8} {quality_s:>9} {row['peak_mib']:>9.0f} {row['first_s']:>7.1f}s"
        f"  {row['description']}",
        flush=True,
    )


def print_summary(size: int, rows: list[dict]) -> None:
    """Per path over the rounds: best median and the range of same-round speed-ups."""
    print(f"-- {size}: over {1 + max(r['round'] for r in rows)} rounds")
    for name in dict.fromkeys(r["path"] for r in rows):
        mine = [r for r in rows if r["path"] == name]
        ups = [r["speedup"] for r in mine if r["speedup"]]
        span = "-"
        if ups:  # the median of the same-round ratios, and their range
            span = f"median {statistics.median(ups):.2f}x ({min(ups):.2f}-{max(ups):.2f}x)"
        best = min(r["median_s"] for r in mine)
        print(f"{size:>5} {name:<14} best median {best:.3f}s, speed-up {span}", flush=True)


def machine_line(device: str) -> str:
    """The processor, its bf16 features and the load, so a table says where it was taken."""
    import os

    import torch

    from lama_model.accel.optimize import cpu_supports_bf16
    from lama_model.accel.precision import machine_id

    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        known = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16")
        found = sorted({f for f in known if f" {f}" in text})
        flags = " ".join(found)
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"machine: {machine_id(torch.device(device))}; CPU flags: {flags or '?'}; native bf16: "
        f"{cpu_supports_bf16()}; load average {load:.2f} on {os.cpu_count()} CPUs"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default=None, help="default 256,512,1024 (CPU), 512,1024,2048 (CUDA)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat all paths in turn this many times (interleaved: fairer on a loaded machine)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paths", default=None, help="comma list; default: all for the device")
    parser.add_argument(
        "--isa",
        choices=sorted(ISA_CAPS),
        default=None,
        help="cap the instruction set in every child (avx2: the AVX2-laptop case on any x86 CPU)",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure_one(args)))
        return

    gpu = args.device == "cuda"
    sizes = [
        int(s) for s in (args.sizes or ("512,1024,2048" if gpu else "256,512,1024")).split(",")
    ]
    paths = _paths_to_time(args, gpu)
    results = []
    with tempfile.TemporaryDirectory(prefix="lama-bench-") as tmp:
        folder = Path(tmp)
        onnx_file = export_for_bench(args.device, folder) if "onnxruntime" in paths else None
        print(machine_line(args.device))
        if args.isa:
            caps = " ".join(f"{k}={v}" for k, v in ISA_CAPS[args.isa].items())
            print(f"instruction set capped in every path: {caps} (OpenVINO rows: checked "
                  "kernel by kernel, shown only if none is above the cap)")  # fmt: skip
        print(
            f"Big LaMa (random weights), {args.device}, {args.threads} threads, median of "
            f"{args.runs} runs after one warm-up, {args.rounds} round(s) of all paths in turn; "
            "speed-up and PSNR vs the official code path (ref) of the same round"
        )
        header = f"{'size':>5} {'path':<14} {'median':>8} {'min':>7} {'speed-up':>8} "
        print(header + f"{'PSNR hole':>9} {'peak MiB':>9} {'1st run':>8}  description")
        for size in sizes:
            for round_no in range(args.rounds):
                results += _time_round(args, paths, size, round_no, folder, onnx_file)
            if args.rounds > 1:
                print_summary(size, [r for r in results if r["size"] == size and "error" not in r])
    if args.json:
        payload = {
            "device": args.device,
            "threads": args.threads,
            "runs": args.runs,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))


def _paths_to_time(args: argparse.Namespace, gpu: bool) -> list[str]:
    """The paths to time, the reference first so every row can compare with it."""
    paths = args.paths.split(",") if args.paths else list(GPU_PATHS if gpu else CPU_PATHS)
    if not args.paths and not gpu:
        from lama_model.accel.optimize import cpu_supports_bf16

        if not cpu_supports_bf16():
            for name in NATIVE_BF16_ONLY:  # emulated bf16: ~40x slower, minutes per size
                paths.remove(name)
        if importlib.util.find_spec("openvino") is None:
            paths = [name for name in paths if name not in OPENVINO_PATHS]
    if "ref" not in paths:
        paths.insert(0, "ref")
    paths.remove("ref")
    paths.insert(0, "ref")
    return paths


def _time_round(args, paths: list[str], size: int, round_no: int, folder: Path,
                onnx_file) -> list[dict]:  # fmt: skip
    """Every path once at ``size``, each row printed as it comes, compared with this round's ref."""
    import numpy as np

    _, mask = sample(size)
    rows = []
    ref_time = ref_out = None
    for name in paths:
        row = run_one(args, name, size, folder, onnx_file)
        row["round"] = round_no
        rows.append(row)
        above = row.get("above_cap")
        if above:  # it would pass for an AVX2 measurement without being one
            row["error"] = (f"NOT capped, not shown: OpenVINO ran {len(above)} kernel(s) "
                            f"above --isa ({', '.join(above[:3])})")  # fmt: skip
        if "error" in row:
            print(f"{size:>5} {name:<14} failed: {row['error']}", flush=True)
            continue
        out = np.load(row.pop("out_file"))
        if name == "ref":
            ref_time, ref_out = row["median_s"], out
        row["speedup"] = ref_time / row["median_s"] if ref_time else None
        row["psnr_hole_db"] = (
            psnr_hole(ref_out, out, mask.numpy()) if ref_out is not None else None
        )
        print_row(row)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
