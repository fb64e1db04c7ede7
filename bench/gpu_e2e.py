"""End-to-end speed on a GPU (or the CPU): the model, ``inpaint()`` in process, the round trip.

    python bench/gpu_e2e.py [--device cuda|cpu] [--model PATH|random-big-lama]
                            [--sizes 512,1024,2048] [--photo 6000x4000] [--clients 8]
                            [--requests 4] [--runs 10] [--parts model,inpaint,server]
                            [--compile] [--extra-variants taps] [--also-server-device cuda,cuda]
                            [--server-args "--batch 8"] [--profile DIR] [--json out.json]

Parts (each prints rows of one table at the end, and all go to ``--json``):

- ``model``: the forward alone on inputs already on the device: float32 eager (the
  reference, cuDNN's default TF32 on CUDA), `accel.optimize.optimize`'s pick (on CUDA
  bf16 autocast + fused + CUDA graphs), and :class:`lama_model.accel.gpu_model.GpuFusedModel`
  (bf16 weights, padded channels, graphs; ``--compile`` adds the background-compiled
  variant, waiting for it). Median ms, speed-up over the reference, PSNR on the hole
  against the reference, peak device memory of that variant alone (models built one at a
  time).
- ``inpaint``: :func:`lama_model.pipeline.host.inpaint` on a uint8 RGBA image with the served
  model (what ``lama-server`` would load), plus the request path with reused pinned
  buffers (:class:`lama_model.pipeline.device.DeviceInpainter`) on CUDA; sizes with
  ``strategy=original`` and a ``--photo`` (24 MP by default) with a small object (``auto``).
- ``server``: a real ``lama-server`` subprocess on loopback; one client (stdlib and pyzmq
  transports, each passing pixels through a pixel file and inline) per size and the photo,
  then ``--clients`` concurrent pyzmq clients (pixel files) at 1024² sending ``--requests``
  each: requests/s against one client's. ``bench/server_overhead.py`` splits a round trip
  into the server's own time and the rest.

``--model random-big-lama`` (default) is the Big LaMa shape with seeded random weights
(``bench/speed.py``'s), saved to a temporary checkpoint for the server.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import server_process  # noqa: E402  (bench/ is not a package)
from speed import build_reference  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, runs: int, device: torch.device, warmup: int = 2) -> float:
    """Median wall ms of ``fn()`` over ``runs`` after ``warmup`` calls (synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def sample(size: int, device: torch.device):
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, size, size, generator=gen)
    mask = torch.zeros(1, 1, size, size)
    for y, x, h, w in ((0.1, 0.1, 0.3, 0.2), (0.5, 0.4, 0.25, 0.45), (0.2, 0.6, 0.2, 0.15)):
        mask[..., int(y * size) : int((y + h) * size), int(x * size) : int((x + w) * size)] = 1
    return image.to(device), mask.to(device)


def psnr_hole(ref: torch.Tensor, out: torch.Tensor, mask: torch.Tensor) -> float:
    hole = mask.bool().expand_as(ref)
    mse = torch.mean((ref.float()[hole] - out.float()[hole]) ** 2).item()
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def load_source(spec: str):
    """(CPU model, checkpoint path for the server, temp dir to clean up)."""
    from lama_model.weights.checkpoint import load_model

    if spec == "random-big-lama":
        model = build_reference("cpu")
        tmp = tempfile.mkdtemp(prefix="lama-bench-")
        path = Path(tmp) / "big-lama-random.pt"
        torch.save(model.generator.state_dict(), path)
        return model, path, tmp
    return load_model(spec, "cpu"), Path(spec), None


def served_model(source, device: torch.device, precision: str, compile: bool = False):
    """What ``lama-server`` loads for these flags (see lama_model.factory)."""
    from lama_model.accel.gpu_model import gpu_model
    from lama_model.accel.optimize import optimize

    model = copy.deepcopy(source).to(device).eval()
    if device.type == "cuda" and compile:
        chosen = gpu_model(model, precision, compile)
        if chosen is not None:
            return chosen
    return optimize(model, device, precision=precision, compile=compile)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def part_model(args, source, device, rows) -> dict[int, float]:
    """Returns the served path's model ms per size (for the round-trip ratios)."""
    from lama_model.accel.gpu_model import GpuFusedModel
    from lama_model.accel.optimize import optimize

    refs: dict[int, torch.Tensor] = {}
    ref_ms: dict[int, float] = {}
    served_ms: dict[int, float] = {}
    precision = "bf16" if device.type == "cuda" else "fp32"
    # What lama-server serves here (lama_model.factory): the round trip is compared with it.
    served_name = (
        f"gpu_fused {precision} compiled" if args.compile and device.type == "cuda"
        else "optimize() pick"
    )  # fmt: skip

    def variants():
        yield "fp32 eager", lambda: copy.deepcopy(source).to(device).eval()
        yield "optimize() pick", lambda: optimize(copy.deepcopy(source).to(device).eval(), device)
        yield f"gpu_fused {precision}", lambda: GpuFusedModel(
            copy.deepcopy(source).to(device).eval(), precision
        )
        extra = set(filter(None, args.extra_variants.split(",")))
        if "nhwc-fft" in extra:
            yield f"gpu_fused {precision} nhwc-fft", lambda: GpuFusedModel(
                copy.deepcopy(source).to(device).eval(), precision, channels_last_fft=True
            )
        if "taps" in extra:
            yield f"gpu_fused {precision} tail-taps", lambda: GpuFusedModel(
                copy.deepcopy(source).to(device).eval(), precision, tail="taps"
            )
        if args.compile:
            yield f"gpu_fused {precision} compiled", lambda: GpuFusedModel(
                copy.deepcopy(source).to(device).eval(), precision, compile=True,
                compile_mode=args.compile_mode,
            )  # fmt: skip

    for name, build in variants():
        try:
            measure_variant(args, name, build, device, refs, ref_ms, served_ms, served_name, rows)
        except Exception as exc:  # one broken variant must not lose the others' numbers
            rows.append({"part": "model", "what": name, "error": repr(exc)[:300]})
            print(rows[-1], flush=True)
    free(device)
    return served_ms


def measure_variant(args, name, build, device, refs, ref_ms, served_ms, served_name, rows):
    """Build one variant, time it at every size, append its rows."""
    free(device)
    start = time.perf_counter()
    model = build()
    build_s = time.perf_counter() - start
    sync(device)
    weights = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    desc = getattr(model, "description", "eager")
    for size in args.sizes:
        image, mask = sample(size, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            compiler = getattr(model, "compiler", None)
            if compiler is not None:
                model(image, mask)
                t0 = time.perf_counter()
                compiler.wait(args.compile_timeout)
                build_s += time.perf_counter() - t0
            out = model(image, mask)
            ms = timed(lambda: model(image, mask), args.runs, device)  # noqa: B023
        # As a process serving only this size would see it: the model's own memory plus
        # what this size allocates (graphs of smaller sizes captured earlier excluded).
        peak = (
            (weights + torch.cuda.max_memory_allocated(device) - before) / 2**20
            if device.type == "cuda"
            else float("nan")
        )
        if name == "fp32 eager":
            refs[size] = out.float().cpu()
            ref_ms[size] = ms
        score = psnr_hole(refs[size], out.cpu(), mask.cpu())
        if name == served_name:
            served_ms[size] = ms
        if args.profile and size == args.concurrent_size and device.type == "cuda":
            write_profile(args.profile, name, size, lambda: model(image, mask))  # noqa: B023
        rows.append({"part": "model", "what": name, "path": desc, "size": f"{size}²",
                     "ms": round(ms, 2), "speedup": round(ref_ms[size] / ms, 2),
                     "psnr_hole_db": round(score, 1), "peak_mib": round(peak, 1),
                     "build_s": round(build_s, 1)})  # fmt: skip
        print(rows[-1], flush=True)


def write_profile(folder: str, name: str, size: int, fn) -> None:
    """Kernel-time table of three forwards (torch profiler) for one variant."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    Path(folder, f"profile_{slug}_{size}.txt").write_text(table)


def _rgba(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A smooth-ish picture (noise is an unfair input for an image model, and slower to ship).
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    img = np.empty((h, w, 4), np.uint8)
    img[..., 0] = (y + 0 * x).astype(np.uint8)
    img[..., 1] = (x + 0 * y).astype(np.uint8)
    img[..., 2] = ((x + y) / 2).astype(np.uint8)
    img[..., 3] = 255
    img[..., :3] ^= rng.integers(0, 8, (h, w, 3), dtype=np.uint8)
    return img


def _mask(h: int, w: int, small: bool = False) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    if small:  # an object of ~1 % of the shorter side squared, off-centre
        s = max(16, min(h, w) // 12)
        mask[h // 3 : h // 3 + s, w // 2 : w // 2 + s] = 255
    else:
        mask[h // 4 : h // 2, w // 3 : 2 * w // 3] = 255
    return mask


def part_inpaint(args, served, device, rows) -> None:
    from lama_model.pipeline import InpaintOptions, inpaint
    from lama_model.pipeline.device import DeviceInpainter

    cases = [(f"{s}²", s, s, InpaintOptions(strategy="original")) for s in args.sizes]
    if args.photo:
        w, h = args.photo
        cases.append((f"photo {w}x{h} small object", h, w, InpaintOptions()))
    runner = DeviceInpainter(served)
    for label, h, w, options in cases:
        image, mask = _rgba(h, w), _mask(h, w, small=label.startswith("photo"))
        runs = max(3, args.runs // 2)
        ms = timed(lambda: inpaint(served, image, mask, options), runs, device)  # noqa: B023
        rows.append({"part": "inpaint", "what": "inpaint()", "size": label, "ms": round(ms, 1)})
        print(rows[-1], flush=True)
        if device.type == "cuda":
            ms = timed(lambda: runner(image, mask, options), runs, device)  # noqa: B023
            rows.append({"part": "inpaint", "what": "DeviceInpainter (pinned reused)",
                         "size": label, "ms": round(ms, 1)})  # fmt: skip
            print(rows[-1], flush=True)


def start_server(args, model_path: Path, tmp: Path, device_spec: str | None = None):
    return server_process.start_server(
        tmp, model_path, "--device", device_spec or args.server_device or str(args.device),
        "--max-pixels", str(40_000_000), "--queue", str(max(8, 2 * args.clients)),
        *shlex.split(args.server_args), *(["--compile"] if args.compile else []),
        timeout=args.server_timeout,
    )  # fmt: skip


def wait_for_compilation(endpoint, token, data, mask, options, timeout: float) -> None:
    """Send one request of this size, then wait until the server compiled what it queued."""
    from lama_client.client import LamaClient

    with LamaClient(endpoint, token, timeout=600) as c:
        c.inpaint(data, mask.tobytes(), options)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            devices = c.info().get("devices", [])
            if all(d.get("compile", {}).get("pending", 0) == 0 for d in devices):
                return
            time.sleep(1.0)


def part_server(
    args, model_path, rows, model_ms: dict[int, float], device_spec: str | None = None,
    single_rps: float | None = None,
) -> float | None:
    """Round trips per size (not with ``device_spec``), then the concurrent clients.

    Returns one pyzmq client's requests/s at ``--concurrent-size``.
    """
    from lama_client.client import LamaClient

    tmp = Path(tempfile.mkdtemp(prefix="lama-bench-server-"))
    proc, endpoint, token, log_path = start_server(args, model_path, tmp, device_spec)
    try:
        with LamaClient(endpoint, token) as c:
            info = c.info()
        path = ",".join(d["path"] for d in info.get("devices", [])) or info.get("path")
        if device_spec:
            path = f"--device {device_spec}: {path}"
        else:
            single_rps = _round_trips(args, endpoint, token, path, rows, model_ms, single_rps)
        if args.clients > 1:
            _concurrent_clients(args, endpoint, token, path, rows, device_spec, single_rps)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if args.server_log:
            with open(args.server_log, "a") as out:
                out.write(log_path.read_text(errors="replace"))
    return single_rps


def _round_trips(args, endpoint, token, path, rows, model_ms, single_rps):
    """One client's round trip per size, per client kind and pixel transport; a row each.

    Returns one pyzmq client's requests/s at ``--concurrent-size`` (or ``single_rps``).
    """
    from lama_client.client import ImageData, LamaClient

    cases = [(f"{s}²", s, s, {"strategy": "original"}, s) for s in args.sizes]
    if args.photo:
        w, h = args.photo
        cases.append((f"photo {w}x{h} small object", h, w, {}, None))
    for label, h, w, options, size in cases:
        image, mask = _rgba(h, w), _mask(h, w, small=size is None)
        data = ImageData(w, h, "RGBA8", image.tobytes())
        if args.compile:
            wait_for_compilation(endpoint, token, data, mask, options, args.compile_timeout)
        for use_pyzmq in (False, True):
            for files in (True, False):
                with LamaClient(endpoint, token, use_pyzmq=use_pyzmq, timeout=600,
                                pixel_files=files) as c:  # fmt: skip
                    ms = timed(lambda: c.inpaint(data, mask.tobytes(), options),  # noqa: B023
                               max(3, args.runs // 2), torch.device("cpu"))  # fmt: skip
                    used = "pixel file" if c.last_used_pixel_file else "inline"
                ratio = ms / model_ms[size] if size in model_ms else None
                what = f"{'pyzmq' if use_pyzmq else 'stdlib'} client, {used}"
                x_model = None if ratio is None else round(ratio, 2)
                rows.append({"part": "server", "what": what, "path": path, "size": label,
                             "ms": round(ms, 1), "x_model": x_model})  # fmt: skip
                print(rows[-1], flush=True)
                if use_pyzmq and files and size == args.concurrent_size:
                    single_rps = 1000 / ms
    return single_rps


def _concurrent_clients(args, endpoint, token, path, rows, device_spec, single_rps) -> None:
    """``--clients`` pyzmq clients, ``--requests`` each, all at once; one row."""
    from lama_client.client import ImageData, LamaClient

    size = args.concurrent_size
    image, mask = _rgba(size, size), _mask(size, size)
    data = ImageData(size, size, "RGBA8", image.tobytes())
    errors: list[Exception] = []
    barrier = threading.Barrier(args.clients + 1)

    def client():
        try:
            with LamaClient(endpoint, token, use_pyzmq=True, timeout=600) as c:
                c.inpaint(data, mask.tobytes(), {"strategy": "original"})  # warm
                barrier.wait()
                for _ in range(args.requests):
                    c.inpaint(data, mask.tobytes(), {"strategy": "original"})
        except Exception as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    rps = args.clients * args.requests / elapsed
    with LamaClient(endpoint, token) as c:
        load = c.info().get("devices")
    what = f"{args.clients} clients x {args.requests}"
    if device_spec:
        what += f" (--device {device_spec})"
    rows.append({"part": "server", "what": what,
                 "path": path, "size": f"{size}²", "ms": round(elapsed * 1000, 1),
                 "req_per_s": round(rps, 2),
                 "x_single_client": round(rps / single_rps, 2) if single_rps else None,
                 "device_load": load})  # fmt: skip
    print(rows[-1], flush=True)


def print_table(rows: list[dict]) -> None:
    cols = ["part", "what", "size", "ms", "speedup", "psnr_hole_db", "peak_mib", "x_model",
            "req_per_s", "x_single_client"]  # fmt: skip
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print(" | ".join(c.ljust(widths[c]) for c in cols))
    print("-+-".join("-" * widths[c] for c in cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "") if r.get(c) is not None else "").ljust(widths[c])
                         for c in cols))  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--server-device", help="lama-server --device (default: --device)")
    p.add_argument("--model", default="random-big-lama")
    p.add_argument("--sizes", default="512,1024,2048")
    p.add_argument("--photo", default="6000x4000", help="WxH of the large photo ('' to skip)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=4)
    p.add_argument("--concurrent-size", type=int, default=1024)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--parts", default="model,inpaint,server")
    p.add_argument("--compile", action="store_true",
                   help="also time the compiled variant (and serve it, as lama-server --compile)")
    p.add_argument("--extra-variants", default="", metavar="nhwc-fft,taps",
                   help="also time gpu_fused with the NHWC FFT layout / the tap-sum output conv")
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    p.add_argument("--compile-timeout", type=float, default=900)
    p.add_argument("--server-args", default="", help="extra lama-server flags, quoted")
    p.add_argument("--also-server-device", default="", metavar="SPEC[;SPEC]",
                   help="repeat the concurrent clients against servers with these --device "
                   "lists, e.g. 'cuda,cuda' (two workers sharing one GPU)")
    p.add_argument("--server-timeout", type=float, default=300)
    p.add_argument("--server-log", help="copy the server's log here")
    p.add_argument("--json", help="write all rows here")
    p.add_argument("--profile", metavar="DIR",
                   help="CUDA: write a kernel table per model variant at --concurrent-size")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A `timeout` around the run still gets the table and the JSON (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.photo = tuple(int(v) for v in args.photo.lower().split("x")) if args.photo else None
    device = torch.device(args.device)
    args.device = device
    parts = set(args.parts.split(","))
    source, model_path, tmp = load_source(args.model)
    rows: list[dict] = []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    meta = {"device": name, "torch": torch.__version__, "model": args.model,
            "threads": torch.get_num_threads(), "load": os.getloadavg()[0]}  # fmt: skip
    print(meta, flush=True)
    model_ms: dict[int, float] = {}
    try:
        if "model" in parts:
            model_ms = part_model(args, source, device, rows)
        if "server" in parts:
            single = part_server(args, model_path, rows, model_ms)
            for spec in filter(None, args.also_server_device.split(";")):
                part_server(args, model_path, rows, model_ms, spec, single)
        if "inpaint" in parts:
            served = served_model(source, device, "auto", args.compile)
            part_inpaint(args, served, device, rows)
            del served
            free(device)
    finally:
        print_table(rows)
        if args.json:
            Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
