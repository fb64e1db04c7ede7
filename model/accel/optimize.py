"""The optimized model: the same generator, run faster (a served model, see
:class:`~lama_model.interface.ServedModel`).

Building blocks:

- :class:`OptimizedModel`: the fused rewrite (:mod:`lama_model.accel.fused`), in float32 or
  natively in bf16/fp16, or autocast around an unfused model (the Fourier transforms stay float32
  either way); TF32 off on CUDA for ``fp32``; channels-last weights; optional
  ``torch.compile`` on inputs padded to size buckets (compilation reused across sizes);
  optional CUDA graphs per bucket; pinned host buffers when inputs arrive on the CPU for a
  CUDA model.
- :class:`~lama_model.accel.onnx.OnnxRuntimeModel` (``backend="onnxruntime"``): an ONNX
  Runtime session on a file from :func:`lama_model.accel.onnx.export_onnx`.
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
import logging
import os
from pathlib import Path

import torch
from torch import nn

from lama_model.accel.background_choice import BackgroundChoice
from lama_model.accel.cuda_graphs import CudaGraphs
from lama_model.accel.fused import FusedGenerator, fuse_generator
from lama_model.accel.onnx import onnx_runtime_model
from lama_model.accel.openvino_runtime import (
    cpu_has_native_bf16,
    openvino_model,
    require_openvino,
)
from lama_model.accel.precision import (
    DTYPES,
    PRECISIONS,
    PROBE_ENV,
    UNSETTLED_STARTS,
    AutocastModel,
    ChoiceCache,
    PrecisionChoice,
    PrecisionError,
    Timer,
    choose_precision,
    float32_math,
    isa_cap_allows_bf16,
    machine_id,
    model_fingerprint,
    probe_from_env,
    settled_after_starts,
)
from lama_model.choices import BACKENDS
from lama_model.errors import BackendError
from lama_model.geometry import bucket_size, pad_symmetric
from lama_model.interface import CompileProgress, ServedModel, ServedWrapper, keep_source
from lama_model.weights.checkpoint import LamaModel

log = logging.getLogger(__name__)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 math (AVX512-BF16 or AMX); otherwise it is emulated.

    Only decides whether ``auto`` measures bf16 at all; whether it is kept is measured.
    False under an instruction-set cap without bf16 (:func:`isa_cap_allows_bf16`).
    """
    if not isa_cap_allows_bf16():
        return False
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
    model: LamaModel, winograd: bool | None = None, dtype: torch.dtype = torch.float32
) -> LamaModel:
    """A :class:`LamaModel` running :func:`~lama_model.accel.fused.fuse_generator`'s rewrite.

    ``winograd`` and ``dtype`` as in :func:`~lama_model.accel.fused.fuse_generator` (default:
    float32, Winograd on for a CPU model). The source model is left as it was. Raises
    ``ValueError`` for a TorchScript model (its graph is not ours to rewrite).
    """
    generator = model.generator
    if isinstance(generator, FusedGenerator):
        return model  # type: ignore[return-value]
    if generator is None:
        raise ValueError("only an eager generator can be fused, not a TorchScript model")
    fused = LamaModel(
        fuse_generator(generator, winograd=winograd, dtype=dtype),
        name=model.name,
        size_multiple=int(model.size_multiple),
    )
    keep_source(fused, generator)  # refinement needs the unfused generator's backward
    return fused


class OptimizedModel(ServedWrapper):
    """A served ``LamaModel`` with speed options; the output matches it within the precision's
    error.

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
        if precision not in PRECISIONS[1:] or precision == "int8":
            raise PrecisionError(_not_torch_precision(precision))
        if precision == "fp16" and device.type == "cpu":
            raise PrecisionError("fp16 needs a GPU; on CPU use fp32 or bf16")
        if precision == "tf32" and device.type != "cuda":
            raise PrecisionError("tf32 is a CUDA (Ampere or later) mode; elsewhere use fp32")
        if precision in DTYPES and model.scripted:
            raise PrecisionError(
                f"a TorchScript model runs in float32 only (its Fourier units fail under "
                f"{precision}); use --precision fp32, or load the checkpoint or official "
                f"folder for {precision}"
            )
        if cuda_graphs and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        multiple = int(model.size_multiple)
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
        self.name = model.name
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
        self._run = CudaGraphs(run) if cuda_graphs else run

    compiler: CompileProgress | None = None  # compiled in the caller's thread, if at all

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


def _not_torch_precision(precision: str) -> str:
    if precision == "int8":
        return ("int8 runs on the openvino backend: --backend openvino (pip install "
                "'lama-inpaint[openvino]'), or --precision auto, which measures it when installed")
    return f"precision must be fp32, tf32, fp16 or bf16, not {precision!r}"


def optimize(
    model: LamaModel,
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
    background: bool = False,
) -> ServedModel:
    """Return the fastest wrapper of ``model`` for ``device`` that passes the quality guard.

    ``fuse`` (default: on for an eager generator) runs :func:`fused_model`'s rewrite, which
    computes the same function to float32 rounding. An explicit ``precision`` is used as
    asked. ``auto`` measures (:func:`lama_model.accel.precision.choose_precision`): the reduced
    precisions the device runs natively and OpenVINO's paths (``candidates``, default
    :func:`_measured_candidates`) are guarded and timed against float32 with ``timer``, and
    kept only if faster by the margin with PSNR >= 40 dB, timed on a ``guard_size``² window
    (default :data:`CPU_WINDOW` on a CPU, :data:`GPU_WINDOW` on a GPU). A clear decision is
    cached in ``cache``
    (default: the user cache; ``ChoiceCache`` of another file, or ``False`` for none).
    ``.choice`` of the result says what was chosen and why; ``.description`` names the path.
    ``compile`` adds ``torch.compile`` (bucketed to ``bucket``, default 64 on CUDA; it
    replaces fusing); on CUDA, CUDA graphs are added when compiling is off.
    ``backend="onnxruntime"`` exports to ``onnx_path`` (or a temporary file) and serves it
    with ONNX Runtime; ``"openvino"`` serves :mod:`lama_model.accel.openvino_runtime`.
    ``background``: measure OpenVINO's paths in a thread (:class:`BackgroundChoice`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}")
    device = torch.device(device) if device is not None else model.device
    model = model.to(device).eval()
    if backend == "onnxruntime":
        return onnx_runtime_model(model, device, onnx_path)
    if backend == "openvino" and (precision != "auto" or model.scripted):
        # A TorchScript model fails here with the reason (openvino converts the eager one).
        return _with_choice(openvino_model(model, precision if precision != "auto" else "fp32"),
                            PrecisionChoice(precision, "asked"))  # fmt: skip
    build = _builder(model, device, compile, bucket, fuse)
    if precision != "auto":
        return _with_choice(build(precision), PrecisionChoice(precision, "asked"))
    settings = (guard_size, cache, candidates, timer)
    return _auto(build, model, device, backend, compile, background, settings)


def _auto(
    build: functools.partial[OptimizedModel],
    model: LamaModel,
    device: torch.device,
    backend: str,
    compile: bool,
    background: bool,
    settings: tuple[int | None, ChoiceCache | None, list[str] | None, Timer | None],
) -> ServedModel:
    """``--precision auto``: what to measure, and whether in the background (see
    :func:`optimize`; ``settings``: its ``guard_size``, ``cache``, ``candidates``, ``timer``)."""
    guard_size, cache, candidates, timer = settings
    probe = probe_from_env()
    if probe is not None:
        candidates, timer = probe if candidates is None else (candidates, probe[1])
    asked = candidates is not None and backend != "openvino"  # measured as given
    if backend == "openvino" or candidates is None:
        candidates = _measured_candidates(model, device, backend, compile)
    if model.scripted:
        # Autocast around a scripted Fourier unit fails (bf16/fp16 reach torch.complex).
        candidates = [c for c in candidates if c not in DTYPES]
    if not candidates:
        why = "TorchScript: float32 only" if model.scripted else _no_candidates_reason(device)
        return _with_choice(build("fp32"), PrecisionChoice("fp32", why))
    size = guard_size or (CPU_WINDOW if device.type == "cpu" else GPU_WINDOW)
    measure = functools.partial(_measured, build, model, size=size, timer=timer, cache=cache,
                                backend=backend)  # fmt: skip
    slow = [c for c in candidates if c.startswith("openvino:")]
    if not slow or backend == "openvino" or _decided(measure, candidates):
        return measure(candidates)
    if asked and not background:
        return measure(candidates)
    # Minutes on a first start: serve torch's choice meanwhile.
    torch_only = [c for c in candidates if c not in slow]
    quick = measure(torch_only) if torch_only else _with_choice(
        build("fp32"), PrecisionChoice("fp32", _no_candidates_reason(device))
    )  # fmt: skip
    if not background:
        # A one-shot command (lama-inpaint) would wait minutes for the first conversion and
        # calibration: it runs torch's choice, and OpenVINO once a server, which measures it
        # in the background, has cached a decision that includes it.
        log.warning(ONE_SHOT_NOTE)
        return quick
    return BackgroundChoice(quick, functools.partial(measure, candidates))


def _measured_candidates(
    model: LamaModel, device: torch.device, backend: str, compile: bool
) -> list[str]:
    """What ``auto`` measures against float32: with the openvino backend its reduced
    precisions (against its float32), else torch's native ones and OpenVINO's paths."""
    if backend == "openvino":
        every = openvino_candidates(model, device, False, every=True)
        return [c for c in every if c != "openvino:fp32"]
    return auto_candidates(device) + openvino_candidates(model, device, compile)


def _builder(
    model: LamaModel, device: torch.device, compile: bool, bucket: int | None, fuse: bool | None
) -> functools.partial[OptimizedModel]:
    """``build(precision)``: the optimized model of ``model`` with the device's options."""
    scripted = model.scripted
    if scripted:
        compile = False  # TorchScript modules cannot be recompiled by dynamo here
    if fuse is None:
        fuse = not scripted and not compile
    if fuse and scripted:
        raise ValueError("a TorchScript model cannot be fused; load the checkpoint instead")
    on_gpu = device.type == "cuda"
    if on_gpu and bucket is None:
        bucket = 64
    return functools.partial(
        _build,
        model,
        fuse=fuse,
        channels_last=on_gpu and not fuse,  # fused models are channels-last already
        compile=compile,
        bucket=bucket if (compile or on_gpu) else None,
        cuda_graphs=on_gpu and not compile and not scripted,
    )


def _decision_key(
    build: functools.partial[OptimizedModel],
    model: LamaModel,
    candidates: list[str],
    size: int,
    backend: str,
) -> str:
    """What a cached decision is valid for: machine, weights, options, candidates, runtimes."""
    return "|".join([
        machine_id(model.device), model_fingerprint(model), chosen_options(build.keywords),
        ",".join(candidates), os.environ.get(PROBE_ENV, ""), f"window {size}",
        *runtime_versions(backend, candidates),
    ])  # fmt: skip


def _decided(measure: functools.partial[ServedModel], candidates: list[str]) -> bool:
    """Whether ``measure(candidates)`` would find its decision cached (no measuring)."""
    cache, (build, model) = measure.keywords["cache"], measure.args
    store = ChoiceCache() if cache is None else cache
    key = _decision_key(build, model, candidates, measure.keywords["size"],
                        measure.keywords["backend"])  # fmt: skip
    return bool(store) and store.get(key) is not None


def _measured(
    build: functools.partial[OptimizedModel],
    model: LamaModel,
    candidates: list[str],
    size: int,
    timer: Timer | None,
    cache: ChoiceCache | None,
    backend: str = "torch",
) -> ServedModel:
    """``auto``: the cached decision for this machine and model, else a measured one."""
    device = model.device
    store = ChoiceCache() if cache is None else cache
    key = _decision_key(build, model, candidates, size, backend)
    build_any = functools.partial(_build_candidate, build, model, backend)
    cached = store.get(key) if store else None
    if cached is not None and cached.precision in ("fp32", *candidates):
        return _with_choice(
            build_any(cached.precision),
            dataclasses.replace(cached, reason=cached.reason + "; cached"),
        )
    measured = timer is None  # real timings (not a test's or the probe's answer)
    # A steadily loaded CPU gives steady but distorted ratios: used, never kept.
    busy = _cpu_busy() if measured and device.type == "cpu" else None
    chosen, choice = choose_precision(
        build_any, None, candidates, size, **({"timer": timer} if timer else {}), busy=busy,
        fallbacks=OPENVINO_FALLBACKS,
    )
    if store and not choice.settled and busy is None and choice.precision == "fp32":
        # Quiet starts that keep coming out too close to call end in float32 for good.
        starts = store.count_unsettled(key)
        if starts >= UNSETTLED_STARTS:
            choice = settled_after_starts(choice, starts)
    if store and choice.settled:
        store.put(key, choice)
    return _with_choice(chosen, choice)


def runtime_versions(backend: str, candidates: list[str]) -> list[str]:
    """The versions of the other runtimes measured (part of the decision's cache key)."""
    if backend != "openvino" and not any(c.startswith("openvino:") for c in candidates):
        return []
    return [f"backend {backend}", f"openvino {require_openvino()}"]


def _build_candidate(
    build: functools.partial[OptimizedModel], model: LamaModel, backend: str, name: str
) -> ServedModel:
    """The model of one candidate: ``openvino:int8`` on OpenVINO, ``bf16`` on torch; ``fp32``
    is the asked backend's float32 (the baseline the others are timed against)."""
    runtime, _, precision = name.rpartition(":")
    if not runtime and name == "fp32" and backend == "openvino":
        runtime = "openvino"
    if runtime != "openvino":
        return build(precision)
    try:
        return openvino_model(model, precision)
    except (BackendError, PrecisionError):
        raise
    except Exception as exc:  # OpenVINO and NNCF raise their own types: a dropped candidate
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc


def _with_choice(model: ServedModel, choice: PrecisionChoice) -> ServedModel:
    model.choice = choice
    return model


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


# The window auto times candidates on must be one a request really has. On a GPU, 256² is
# launch-bound and favoured tf32 (5.1x fp32 there), while at 1024² bf16 is faster (20 vs 24 ms
# on an H200). On a CPU, 128² chose int8 on the AVX2 EPYC (1.27x fp32+fused) where 512² and
# 768² found it slower (0.98x, 0.94x; 0.94x at 512² on a quiet machine): wrong for every real
# window. 768² (0.6 MP, the plug-ins' windows are 0.5-1 MP) decided as 512² (LaMa's training
# size) did, for about twice the measuring time (bench/startup.py: 309 s against 171 s on the
# loaded 2-core machine, about 40 s against 18 s quiet), so 512².
GPU_WINDOW = 1024
CPU_WINDOW = 512

# OpenVINO's float32 and bf16 graphs are measured only when its int8 graph is not kept: int8
# (the rest of the graph in bf16 where native) was the faster wherever measured, 1.52x against
# 1.02x the official code at 512² on the AVX2 EPYC, 2.17x (2.41x) against 1.35x (bf16 1.74x)
# on the AVX-512-BF16 EPYC; each of them costs a compile, a guard run and timing rounds.
OPENVINO_FALLBACKS = {"openvino:fp32": "openvino:int8", "openvino:bf16": "openvino:int8"}

# Which backends ``auto`` may measure besides torch, e.g. ``torch`` alone: a comma list; unset,
# every installed one. The test suite sets ``torch`` so the tiny model's many server starts do
# not each convert and calibrate it; the OpenVINO tests set it back.
AUTO_BACKENDS_ENV = "LAMA_AUTO_BACKENDS"
ONE_SHOT_NOTE = (
    "auto: OpenVINO not measured yet (its first conversion takes minutes): torch's choice "
    "runs; lama-server measures OpenVINO in the background and later runs use its decision, "
    "or ask for it with --backend openvino"
)


def auto_allows(backend: str) -> bool:
    """Whether :data:`AUTO_BACKENDS_ENV` lets ``auto`` choices (the generator's, the
    segmenter's encoder) use ``backend`` besides torch: unset, every installed one."""
    allowed = os.environ.get(AUTO_BACKENDS_ENV, "").replace(" ", "")
    return not allowed or backend in allowed.split(",")


def openvino_candidates(
    model: LamaModel, device: torch.device, compile: bool, every: bool = False
) -> list[str]:
    """The OpenVINO paths ``auto`` measures: CPU, eager generator, OpenVINO installed and
    (unless ``every``) allowed by :data:`AUTO_BACKENDS_ENV`; bf16 only where native."""
    if not (every or auto_allows("openvino")):
        return []
    if device.type != "cpu" or model.scripted or compile:
        return []
    try:
        require_openvino()
    except BackendError:
        return []
    bf16 = ["openvino:bf16"] if cpu_has_native_bf16() else []
    return ["openvino:fp32", "openvino:int8", *bf16]


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


def _build(model: nn.Module, precision: str, **options: object) -> OptimizedModel:
    if precision == "fp32" and not options.get("compile"):
        # float32 carries the official-output contract: no padding to size buckets (the
        # Fourier units would see a larger frame, up to ~0.8 of a level on the golden cases),
        # hence no CUDA graphs either (one per exact size would be captured again and again).
        options = dict(options, bucket=None, cuda_graphs=False)
    if options.get("channels_last") and not options.get("fuse"):
        model = copy.deepcopy(model)  # keep the caller's model (the guard's reference) intact
    return OptimizedModel(model, precision=precision, **options)  # type: ignore[arg-type]


__all__ = [
    "BACKENDS",
    "OptimizedModel",
    "AUTO_BACKENDS_ENV",
    "auto_allows",
    "auto_candidates",
    "cpu_supports_bf16",
    "fused_model",
    "openvino_candidates",
    "optimize",
    "runtime_versions",
]
