"""Fast inference wrappers with the :class:`~lama_model.weights.checkpoint.LamaModel` interface.

``forward(image[B,3,H,W], mask[B,1,H,W]) → image``, attributes ``.device``, ``.name``,
``.size_multiple``. Building blocks:

- :class:`FastModel`: the fused rewrite (:mod:`lama_model.accel.fused`), in float32 or natively in
  bf16/fp16, or autocast around an unfused model (the Fourier transforms stay float32
  either way); TF32 off on CUDA for ``fp32``; channels-last weights; optional
  ``torch.compile`` on inputs padded to size buckets (compilation reused across sizes);
  optional CUDA graphs per bucket; pinned host buffers when inputs arrive on the CPU for a
  CUDA model.
- :class:`OnnxRuntimeModel`: an ONNX Runtime session on a file from
  :func:`lama_model.accel.onnx.export_onnx`.
- :func:`optimize`: builds the configuration for a device; with ``precision="auto"`` it
  measures the candidates (:func:`lama_model.accel.precision.choose_precision`) and caches the
  decision.

Measured on the 2-core AVX2 CPU of this project (``bench/speed.py``, Big LaMa, 2 threads,
512²): the fused rewrite (Winograd residual blocks) is the fastest float32 path, about 1.6x
over float32 eager with no compile step; ``torch.compile`` (inductor, freezing) gives 1.4x
after ~75 s of compilation per input shape; channels-last ~1.1x, ``torch.jit.freeze``
~1.05x, ONNX Runtime is slower (0.7x), and bf16 is emulated without AVX512-BF16/AMX (~40x
slower), so ``auto`` does not even try it there. On CPUs with native bf16 the fused bf16
model is much faster than float32 (several times on an AVX512-BF16 EPYC), and ``auto``
keeps it when it measures so.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lama_model.accel.fused import FusedGenerator, fuse_generator
from lama_model.accel.precision import (
    DTYPES,
    PRECISIONS,
    PROBE_ENV,
    AutocastModel,
    ChoiceCache,
    PrecisionChoice,
    PrecisionError,
    Timer,
    choose_precision,
    float32_math,
    machine_id,
    model_fingerprint,
    probe_from_env,
)
from lama_model.choices import BACKENDS
from lama_model.pipeline.refine import keep_source
from lama_model.weights.checkpoint import LamaModel

MAX_CUDA_GRAPHS = 4  # each graph keeps its activations alive; a few sizes cover a session


def pad_symmetric(t: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` at the bottom/right with NumPy's ``symmetric`` mode.

    The edge pixel is repeated, as in the inpainting pipeline's own padding; pads longer
    than the image mirror again, so any size works.
    """
    while bottom > 0:
        step = min(bottom, t.shape[-2])
        t = torch.cat([t, t[..., -step:, :].flip(-2)], dim=-2)
        bottom -= step
    while right > 0:
        step = min(right, t.shape[-1])
        t = torch.cat([t, t[..., -step:].flip(-1)], dim=-1)
        right -= step
    return t


def bucket_size(size: int, bucket: int) -> int:
    """``size`` rounded up to a multiple of ``bucket``."""
    return -(-size // bucket) * bucket


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 math (AVX512-BF16 or AMX); otherwise it is emulated.

    Only decides whether ``auto`` measures bf16 at all; whether it is kept is measured.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    # oneDNN reports "supported" for plain AVX512 too, where bf16 is emulated and slow.
    return bool(check and check() and not flags)


def fused_model(
    model: nn.Module, winograd: bool | None = None, dtype: torch.dtype = torch.float32
) -> LamaModel:
    """A :class:`LamaModel` running :func:`~lama_model.accel.fused.fuse_generator`'s rewrite.

    ``winograd`` and ``dtype`` as in :func:`~lama_model.accel.fused.fuse_generator` (default:
    float32, Winograd on for a CPU model). The source model is left as it was. Raises
    ``ValueError`` for a TorchScript model (its graph is not ours to rewrite).
    """
    generator = getattr(model, "generator", None)
    if isinstance(generator, FusedGenerator):
        return model  # type: ignore[return-value]
    if generator is None:
        raise ValueError("only an eager generator can be fused, not a TorchScript model")
    fused = LamaModel(
        fuse_generator(generator, winograd=winograd, dtype=dtype),
        name=getattr(model, "name", "model"),
        size_multiple=int(getattr(model, "size_multiple", 8)),
    )
    keep_source(fused, generator)  # refinement needs the unfused generator's backward
    return fused


class _CudaGraphs:
    """CUDA graph per input shape and dtype (LRU of ``limit``): static buffers in, replay,
    copy out. CUDA only; :mod:`~lama_model.accel.gpu_model` uses it too."""

    def __init__(
        self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], limit: int = MAX_CUDA_GRAPHS
    ) -> None:
        self.fn = fn
        self.limit = limit
        self.graphs: OrderedDict[tuple, tuple] = OrderedDict()

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if image.shape[0] > 1:
            # Batches (the server's dynamic batching) hide their launches; a graph per batch
            # size would evict the per-size graphs and re-capture over and over.
            return self.fn(image, mask)
        key = (*image.shape, *mask.shape, image.dtype)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(image, mask)
            self.graphs[key] = entry
            if len(self.graphs) > self.limit:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(key)
        graph, static_image, static_mask, static_out = entry
        static_image.copy_(image)
        static_mask.copy_(mask)
        graph.replay()
        return static_out.clone()

    def _capture(self, image: torch.Tensor, mask: torch.Tensor) -> tuple:
        static_image, static_mask = image.clone(), mask.clone()
        # Warm-up on a side stream, as CUDA graph capture requires (cuDNN picks algorithms),
        # on the inputs' device (a worker on cuda:1 need not have it as the current device).
        device = image.device
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.fn(static_image, static_mask)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other workers' threads (other GPUs, or the same one) keep running.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self.fn(static_image, static_mask)
        return graph, static_image, static_mask, static_out


class FastModel(nn.Module):
    """``LamaModel`` with speed options; the output matches it within the precision's error.

    - ``precision``: ``fp32`` (TF32 off on CUDA), ``tf32`` (CUDA), ``fp16`` (GPU) or
      ``bf16``: autocast, or with ``fuse`` on a CPU a native reduced-precision model (weights
      cast once; Fourier transforms and the output layer in float32);
    - ``fuse``: run :func:`fused_model`'s rewrite (BatchNorm folded, conv + add + ReLU fused,
      channels-last activations): same function to float32 rounding, faster everywhere;
    - ``channels_last``: NHWC weights and inputs (helps tensor cores; not CPUs here);
    - ``compile``: ``torch.compile``; with ``bucket`` the input is padded (symmetric, like
      the pipeline's own padding) up to a multiple of ``bucket`` and the output cropped, so a
      handful of compiled graphs cover all sizes. Padding moves the fill slightly (the
      Fourier units see the padded frame), which the quality guard bounds;
    - ``cuda_graphs``: replay a captured CUDA graph per bucket (CUDA only; needs ``bucket``
      to keep the number of graphs small);
    - inputs on the CPU for a CUDA model go through pinned buffers and come back on the CPU.

    The model is changed in place for ``channels_last``: pass a copy to keep the original.
    """

    def __init__(
        self,
        model: nn.Module,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        bucket: int | None = None,
        cuda_graphs: bool = False,
        fuse: bool = False,
    ) -> None:
        super().__init__()
        device = model.device
        if precision not in PRECISIONS[1:]:
            raise PrecisionError(f"precision must be fp32, tf32, fp16 or bf16, not {precision!r}")
        if precision == "fp16" and device.type == "cpu":
            raise PrecisionError("fp16 needs a GPU; on CPU use fp32 or bf16")
        if precision == "tf32" and device.type != "cuda":
            raise PrecisionError("tf32 is a CUDA (Ampere or later) mode; elsewhere use fp32")
        if precision in DTYPES and getattr(model, "scripted", False):
            raise PrecisionError(
                f"a TorchScript model runs in float32 only (its Fourier units fail under "
                f"{precision}); use --precision fp32, or load the checkpoint or official "
                f"folder for {precision}"
            )
        if cuda_graphs and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        multiple = int(getattr(model, "size_multiple", 8))
        if bucket is not None and (bucket <= 0 or bucket % multiple):
            raise ValueError(f"bucket must be a positive multiple of {multiple}, not {bucket}")
        reduced = DTYPES.get(precision)
        # On a CPU, reduced precision is native in the fused rewrite (weights cast once: oneDNN's
        # bf16 kernels, 2.4x the official path at 512² here). On CUDA autocast around the
        # float32 rewrite is faster: H200, 1024², with CUDA graphs, 19 ms against about 26 ms
        # for the native bf16 rewrite, which lost the measured choice to tf32 (23 ms).
        native = reduced is not None and device.type == "cpu"
        if fuse:
            # Winograd kernels are CPU float32 only.
            winograd = device.type == "cpu" and reduced is None
            dtype = reduced if native else torch.float32
            model = fused_model(model, winograd=winograd, dtype=dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        autocast = reduced is not None and not (fuse and native)
        self.inner = AutocastModel(model, reduced) if autocast else model  # type: ignore[arg-type]
        self.choice: PrecisionChoice | None = None  # set by optimize(): why this precision
        self.name = getattr(model, "name", "model")
        self.size_multiple = multiple
        self.precision = precision
        self.channels_last = channels_last
        self.fused = fuse
        self.bucket = bucket
        self.compiled = compile
        self.cuda_graphs = cuda_graphs
        run: nn.Module = self.inner
        if compile:
            # dynamic=False: one specialised graph per bucket, which is what buckets are for.
            run = torch.compile(run, dynamic=False if bucket else None)
        self._run = _CudaGraphs(run) if cuda_graphs else run

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def input_device(self) -> torch.device:
        """Where callers should put inputs: the CPU for a CUDA model (pinned copies here)."""
        return torch.device("cpu") if self.device.type == "cuda" else self.device

    @property
    def description(self) -> str:
        """Short human-readable summary, e.g. ``bf16+channels_last+compile/64``."""
        parts = [self.precision]
        if self.fused:
            parts.append("fused")
        if self.channels_last:
            parts.append("channels_last")
        if self.compiled:
            parts.append("compile" + (f"/{self.bucket}" if self.bucket else ""))
        if self.cuda_graphs:
            parts.append("cuda_graphs")
        return "+".join(parts)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        device = self.device
        host = image.device
        if host != device and device.type == "cuda":
            # Pinned buffers make the host→device copy asynchronous and faster.
            image = image.pin_memory().to(device, non_blocking=True)
            mask = mask.pin_memory().to(device, non_blocking=True)
        height, width = image.shape[-2:]
        if self.bucket:
            ph = bucket_size(height, self.bucket) - height
            pw = bucket_size(width, self.bucket) - width
            image, mask = pad_symmetric(image, ph, pw), pad_symmetric(mask, ph, pw)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
            mask = mask.contiguous(memory_format=torch.channels_last)
        with float32_math(device, allow_tf32=self.precision == "tf32"):
            out = self._run(image, mask).float()[..., :height, :width]
        if host != device:
            if host.type == "cpu" and device.type == "cuda":
                pinned = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
                pinned.copy_(out, non_blocking=True)
                torch.cuda.current_stream().synchronize()
                return pinned
            return out.to(host)
        return out.contiguous()


class OnnxRuntimeModel(nn.Module):
    """ONNX Runtime session behind the ``LamaModel`` interface (file from ``export_onnx``)."""

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        providers: list[str] | None = None,
        threads: int | None = None,
        size_multiple: int = 8,
    ) -> None:
        super().__init__()
        import onnxruntime as ort  # optional dependency: only this backend needs it

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=chosen)
        self.providers = self.session.get_providers()
        self.name = name or Path(path).stem
        self.size_multiple = size_multiple

    @property
    def device(self) -> torch.device:
        # Inputs are handed over as NumPy arrays; ORT moves them itself.
        return torch.device("cpu")

    @property
    def description(self) -> str:
        return "onnxruntime:" + self.providers[0].replace("ExecutionProvider", "").lower()

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        feeds = {
            "image": image.detach().float().cpu().contiguous().numpy(),
            "mask": mask.detach().float().cpu().contiguous().numpy(),
        }
        (out,) = self.session.run(["output"], feeds)
        return torch.from_numpy(out).to(image.device)


def optimize(
    model: nn.Module,
    device: str | torch.device | None = None,
    precision: str = "auto",
    compile: bool = False,
    backend: str = "torch",
    onnx_path: str | Path | None = None,
    bucket: int | None = None,
    guard_size: int | None = None,
    fuse: bool | None = None,
    cache: ChoiceCache | None = None,
    candidates: list[str] | None = None,
    timer: Timer | None = None,
) -> nn.Module:
    """Return the fastest wrapper of ``model`` for ``device`` that passes the quality guard.

    ``fuse`` (default: on for an eager generator) runs :func:`fused_model`'s rewrite, which
    computes the same function to float32 rounding. An explicit ``precision`` is used as
    asked. ``auto`` measures (:func:`lama_model.accel.precision.choose_precision`): the reduced
    precisions the device runs natively (``candidates``, default
    :func:`auto_candidates`) are guarded and timed against float32 with ``timer``, and
    kept only if faster by the margin with PSNR >= 40 dB. The decision is cached in
    ``cache`` (default: the user cache; pass ``ChoiceCache`` of another file, or ``False``
    for none). ``.choice`` of the result says what was chosen and why; ``.description``
    names the path. ``compile`` adds ``torch.compile`` (bucketed to ``bucket``, default 64
    on CUDA; it replaces fusing, which it does itself); on CUDA, CUDA graphs are added when
    compiling is off. ``backend="onnxruntime"`` exports to ``onnx_path`` (or a temporary
    file) and serves it with ONNX Runtime instead.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}")
    device = torch.device(device) if device is not None else model.device
    model = model.to(device).eval()
    if backend == "onnxruntime":
        return _onnxruntime(model, device, onnx_path)
    scripted = bool(getattr(model, "scripted", False))
    if scripted:
        compile = False  # TorchScript modules cannot be recompiled by dynamo here
    if fuse is None:
        fuse = not scripted and not compile
    if fuse and scripted:
        raise ValueError("a TorchScript model cannot be fused; load the checkpoint instead")
    on_gpu = device.type == "cuda"
    if on_gpu and bucket is None:
        bucket = 64
    build = functools.partial(
        _build,
        model,
        fuse=fuse,
        channels_last=on_gpu and not fuse,  # fused models are channels-last already
        compile=compile,
        bucket=bucket if (compile or on_gpu) else None,
        cuda_graphs=on_gpu and not compile and not scripted,
    )
    if precision != "auto":
        chosen = build(precision)
        chosen.choice = PrecisionChoice(precision, "asked")
        return chosen
    probe = probe_from_env()
    if probe is not None:
        candidates, timer = probe if candidates is None else (candidates, probe[1])
    if candidates is None:
        candidates = auto_candidates(device)
    if scripted:
        # Autocast around a scripted Fourier unit fails (bf16/fp16 reach torch.complex).
        candidates = [c for c in candidates if c not in DTYPES]
    if not candidates:
        chosen = build("fp32")
        why = "TorchScript: float32 only" if scripted else _no_candidates_reason(device)
        chosen.choice = PrecisionChoice("fp32", why)
        return chosen
    store = ChoiceCache() if cache is None else cache
    # The window must be one a request really has: on a GPU, 256² is launch-bound and
    # favoured tf32 (5.1x fp32 there), while at 1024² bf16 is faster (20 vs 24 ms on an H200)
    # and holds a third of the memory. 1024² costs about half a second of timing on a GPU.
    size = guard_size or (128 if device.type == "cpu" else 1024)
    key = "|".join([
        machine_id(device), model_fingerprint(model), chosen_options(build.keywords),
        ",".join(candidates), os.environ.get(PROBE_ENV, ""), f"window {size}",
    ])  # fmt: skip
    cached = store.get(key) if store else None
    if cached is not None and cached.precision in ("fp32", *candidates):
        chosen = build(cached.precision)
        chosen.choice = PrecisionChoice(cached.precision, cached.reason + "; cached")
        return chosen
    chosen, choice = choose_precision(
        build, model, candidates, size, **({"timer": timer} if timer else {})
    )
    measured = timer is None  # real timings (not a test's or the probe's answer)
    busy = _cpu_busy() if measured and device.type == "cpu" else None
    if busy and choice.settled:
        # A steadily loaded CPU gives steady but distorted ratios: use them, do not keep them.
        choice = dataclasses.replace(
            choice, reason=f"{choice.reason}; {busy}: measured again next start", settled=False
        )
    chosen.choice = choice
    if store and choice.settled:
        store.put(key, choice)
    return chosen


def _cpu_busy() -> str | None:
    """``load 4.0 on 2 CPUs`` when more threads wait to run than there are CPUs, else None."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cpus = os.cpu_count() or 1
    return f"load {load:.1f} on {cpus} CPUs" if load > cpus else None


def chosen_options(options: dict) -> str:
    """The build options that change the timing, as a short text for the cache key."""
    return ",".join(f"{k}={options[k]}" for k in sorted(options))


def auto_candidates(device: torch.device) -> list[str]:
    """Precisions other than strict float32 that ``device`` runs natively (to be measured)."""
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        tf32 = ["tf32"] if capability[0] >= 8 else []  # Ampere and later
        return tf32 + (["bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp16"])
    if device.type == "mps":
        return ["fp16"]
    return ["bf16"] if cpu_supports_bf16() else []


def _no_candidates_reason(device: torch.device) -> str:
    if device.type == "cpu":
        return "no native bf16 on this CPU"
    return f"no reduced precision on {device.type}"


def _build(model: nn.Module, precision: str, **options: object) -> FastModel:
    if precision == "fp32" and not options.get("compile"):
        # float32 carries the official-output contract: no padding to size buckets (the
        # Fourier units would see a larger frame, up to ~0.8 of a level on the golden cases),
        # hence no CUDA graphs either (one per exact size would be captured again and again).
        options = dict(options, bucket=None, cuda_graphs=False)
    if options.get("channels_last") and not options.get("fuse"):
        model = copy.deepcopy(model)  # keep the caller's model (the guard's reference) intact
    return FastModel(model, precision=precision, **options)  # type: ignore[arg-type]


def _onnxruntime(model: nn.Module, device: torch.device, onnx_path: str | Path | None) -> nn.Module:
    from lama_model.accel.onnx import export_onnx

    if onnx_path is None or not Path(onnx_path).is_file():
        if onnx_path is None:
            import tempfile

            onnx_path = Path(tempfile.mkdtemp(prefix="lama-onnx-")) / "model.onnx"
        onnx_path = Path(onnx_path)
        # Written beside and renamed: an interrupted export never leaves a broken file.
        partial = onnx_path.with_name(onnx_path.name + ".partial")
        export_onnx(model.cpu(), partial)
        partial.replace(onnx_path)
        model.to(device)
    providers = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    return OnnxRuntimeModel(
        onnx_path,
        name=getattr(model, "name", None),
        providers=providers + ["CPUExecutionProvider"],
        size_multiple=int(getattr(model, "size_multiple", 8)),
    )


__all__ = [
    "BACKENDS",
    "FastModel",
    "OnnxRuntimeModel",
    "bucket_size",
    "auto_candidates",
    "cpu_supports_bf16",
    "fused_model",
    "optimize",
    "pad_symmetric",
]
