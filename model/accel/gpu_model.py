"""The fused generator laid out for GPU tensor cores, with optional background compilation.

Built from :func:`lama_model.accel.fused.fuse_generator` (BatchNorms folded) and changed where the
H200 profile of the autocast path (``OptimizedModel(bf16, fuse, cuda_graphs)``) showed time going:

- **weights cast once**: the whole fused generator is converted to bf16 (or fp16) at build
  time; autocast re-cast every weight on every call (part of the 26 % of GPU time spent in
  ``aten::copy_``). The Fourier transforms still run in float32
  (:class:`~lama_model.accel.fused.FusedFourierUnit` upcasts around them);
- **tensor-core friendly channel counts**: the 4-channel input convolution (7×7) and the
  3-channel output convolution (7×7) ran in a slow generic cuDNN kernel (~2.6 ms of 18.5 at
  1024²); their channels are padded with zero weights to 8, which computes the same sums;
- **CUDA graphs per size bucket** (launch overhead gone), captured thread-locally so that a
  background compilation can run meanwhile;
- **``torch.compile`` without blocking**: with ``compile=True`` each new bucket is served
  eagerly (graphs) while a background thread compiles it (``max-autotune`` by default,
  which fuses the add/ReLU epilogues and the casts); the compiled version takes over once
  ready. Inductor's artefacts persist in the user cache (``<cache>/inductor``) so a restart
  compiles from cache.

The result is a :class:`~lama_model.interface.ServedModel`, like
:class:`~lama_model.accel.optimize.OptimizedModel`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lama_model.accel.cuda_graphs import CudaGraphs
from lama_model.accel.fused import (
    FoldedConv,
    FusedFourierUnit,
    FusedGenerator,
    FusedHead,
    FusedTail,
    fuse_generator,
)
from lama_model.accel.precision import MIN_PSNR_DB, quality_guard
from lama_model.devices import module_device
from lama_model.geometry import bucket_size, pad_symmetric
from lama_model.interface import PrecisionChoice, keep_source, kept_source
from lama_model.weights.checkpoint import LamaModel

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CHANNEL_MULTIPLE = 8  # tensor-core kernels want channel counts in multiples of 8 (16 B bf16)
TAILS = ("conv", "taps")  # how the output convolution runs: cuDNN, or TapSumTail
MAX_GRAPHS = 6  # per-size graphs (batch 1) each hold their activations
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad_in_channels(conv: FoldedConv, channels: int) -> None:
    w = conv.weight
    if w.shape[1] >= channels:
        return
    padded = w.new_zeros((w.shape[0], channels, *w.shape[2:]))
    padded[:, : w.shape[1]] = w
    conv.weight = padded.contiguous(memory_format=torch.channels_last)


def _pad_out_channels(conv: FoldedConv, channels: int) -> None:
    w = conv.weight
    if w.shape[0] >= channels:
        return
    padded = w.new_zeros((channels, *w.shape[1:]))
    padded[: w.shape[0]] = w
    conv.weight = padded.contiguous(memory_format=torch.channels_last)
    if conv.bias is not None:
        bias = conv.bias.new_zeros(channels)
        bias[: conv.bias.shape[0]] = conv.bias
        conv.bias = bias


class ChannelsLastFourierUnit(nn.Module):
    """:class:`~lama_model.accel.fused.FusedFourierUnit` without leaving channels-last.

    The FFT runs over H and W of the NHWC tensor (channels as the inner batch), so the
    spectrum's ``(re, im)`` pairs are already the interleaved channel order the 1×1 conv
    expects: no transposes, ``stack`` or ``complex`` copies, only the float32 ↔ bf16 casts
    around the (float32) transforms. Measured slower on an H200 (cuFFT on the strided
    layout: 23.4 vs 20.0 ms at 1024², 77.9 vs 72.1 at 2048²), so off by default.
    """

    def __init__(self, conv: FoldedConv) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        nhwc = x.permute(0, 2, 3, 1).float()
        spectrum = torch.fft.rfftn(nhwc, dim=(1, 2), norm="ortho")  # (B, H, W', C)
        half = spectrum.shape[2]
        stacked = torch.view_as_real(spectrum).reshape(batch, height, half, 2 * channels)
        mixed = self.conv(stacked.permute(0, 3, 1, 2).to(x.dtype), relu=True)
        pairs = mixed.permute(0, 2, 3, 1).float().reshape(batch, height, half, channels, 2)
        spectrum = torch.view_as_complex(pairs.contiguous())
        out = torch.fft.irfftn(spectrum, s=(height, width), dim=(1, 2), norm="ortho")
        return out.permute(0, 3, 1, 2).to(x.dtype)


def _use_channels_last_fft(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, FusedFourierUnit):
            setattr(module, name, ChannelsLastFourierUnit(child.conv))
        else:
            _use_channels_last_fft(child)


class TapSumTail(nn.Module):
    """The output convolution (k×k, C → few channels) as GEMMs plus shifted sums.

    cuDNN runs the 7×7, 64 → 3 output convolution in a generic kernel (1.8 ms at 1024² on an
    H200, 3.4 ms with 8 padded outputs; its arithmetic is 0.04 ms of tensor-core time). Here,
    for each kernel row ``dy``, one matrix product gives every column tap's contribution
    ``(k·O, C) @ (C, pixels)`` and the k shifted slices are summed in float32: memory-bound
    work of a fraction of a millisecond. Same function (float32 accumulation of the taps).
    """

    def __init__(self, tail: FusedTail, out_channels: int) -> None:
        super().__init__()
        weight = tail.conv.weight.detach()[:out_channels].float()  # (O, C, k, k)
        o, c, k, _ = weight.shape
        if tail.conv.stride != 1 or tail.conv.dilation != 1 or tail.conv.zero_padding:
            raise ValueError("TapSumTail needs a stride-1, undilated, reflect-padded conv")
        # rows[dy] is (k·O, C): row dx·O + o holds weight[o, :, dy, dx].
        rows = weight.permute(2, 3, 0, 1).reshape(k, k * o, c)
        self.register_buffer("rows", rows.contiguous())
        bias = tail.conv.bias
        self.register_buffer("bias", None if bias is None else bias.detach()[:out_channels].float())
        self.pad = tail.pad
        self.k = k
        self.out_channels = o
        self.activation = tail.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        padded = torch.nn.functional.pad(x.contiguous(), (self.pad,) * 4, mode="reflect")
        hp, wp = padded.shape[-2:]
        flat = padded.view(batch, channels, hp * wp)
        o, k = self.out_channels, self.k
        out = torch.zeros(batch, o, height, width, dtype=torch.float32, device=x.device)
        for dy in range(k):
            taps = torch.matmul(self.rows[dy].to(x.dtype), flat).view(batch, k, o, hp, wp)
            for dx in range(k):
                out.add_(taps[:, dx, :, dy : dy + height, dx : dx + width])
        if self.bias is not None:
            out.add_(self.bias.view(1, -1, 1, 1))
        return self.activation(out)


class HardwareGenerator(nn.Module):
    """A :class:`FusedGenerator` in one dtype with channel-padded first and last layers.

    ``forward(x[B, C, H, W]) → (B, out, H, W)`` like the generator, in ``dtype``; the input
    may have fewer channels than the padded first layer (zeros are appended).
    """

    def __init__(
        self,
        fused: FusedGenerator,
        dtype: torch.dtype,
        channels_last_fft: bool = False,
        tail: str = "conv",
    ) -> None:
        super().__init__()
        if channels_last_fft:
            _use_channels_last_fft(fused)
        head, last = fused.stages[0], fused.stages[-1]
        if not isinstance(head, FusedHead) or not isinstance(last, FusedTail):
            raise ValueError("expected a fused LaMa generator (head ... tail)")
        if tail not in TAILS:
            raise ValueError(f"tail must be one of {', '.join(TAILS)}, not {tail!r}")
        out_channels = int(last.conv.weight.shape[0])
        in_channels = 0
        for conv in (head.ffc.l2l, head.ffc.l2g):
            if conv is not None:
                in_channels = conv.weight.shape[1]
                _pad_in_channels(conv, _round_up(in_channels, CHANNEL_MULTIPLE))
        taps = TapSumTail(last, out_channels) if tail == "taps" else None
        if taps is None:
            _pad_out_channels(last.conv, _round_up(out_channels, CHANNEL_MULTIPLE))
        self.in_channels = _round_up(in_channels, CHANNEL_MULTIPLE)
        self.out_channels = out_channels
        self.dtype = dtype
        self.fused = fused.to(dtype)
        if taps is not None:  # added after the cast: its weights stay float32 (a few KB)
            self.fused.stages[-1] = taps
        self.size_multiple = fused.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = self.in_channels - x.shape[1]
        if extra > 0:
            x = torch.cat([x, x.new_zeros((x.shape[0], extra, *x.shape[2:]))], dim=1)
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        state = x
        for stage in self.fused.stages:
            state = stage(state)
        return state[:, : self.out_channels]


def hardware_generator(
    generator: nn.Module,
    precision: str = "bf16",
    channels_last_fft: bool = False,
    tail: str = "conv",
) -> HardwareGenerator:
    """Fuse ``generator`` (an eager FFC ResNet generator) and lay it out for tensor cores."""
    fused = fuse_generator(generator, winograd=False)
    return HardwareGenerator(fused, DTYPES[precision], channels_last_fft, tail)


class BackgroundCompiler:
    """Compiles ``fn`` per input shape on a background thread; :meth:`get` never waits.

    ``get(shape)`` returns the compiled function once that shape has been compiled (and
    warmed), else None after queueing its compilation. Failures are logged once and the
    shape stays eager.
    """

    def __init__(self, fn: Forward, mode: str | None, backend: str = "inductor") -> None:
        options = {"mode": mode} if mode and backend == "inductor" else {}
        self.compiled = torch.compile(fn, dynamic=False, backend=backend, **options)
        self._ready: set[tuple] = set()
        self._failed: set[tuple] = set()
        self._queue: list[tuple[tuple, torch.Tensor, torch.Tensor]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def get(self, image: torch.Tensor, mask: torch.Tensor) -> Forward | None:
        key = (*image.shape, *mask.shape, image.dtype, str(image.device))
        with self._cond:
            if key in self._ready:
                return self.compiled
            if key in self._failed or any(k == key for k, _, _ in self._queue):
                return None
            self._queue.append((key, image.detach().clone(), mask.detach().clone()))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="lama-compile", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        return None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty (tests, benchmarks); True if it emptied."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue, timeout)

    @property
    def ready_shapes(self) -> int:
        with self._cond:
            return len(self._ready)

    @property
    def pending_shapes(self) -> int:
        with self._cond:
            return len(self._queue)

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._thread = None
                    self._cond.notify_all()
                    return
                key, image, mask = self._queue[0]
            ok = True
            try:
                device = image.device
                stream = torch.cuda.Stream(device) if device.type == "cuda" else None
                with torch.inference_mode(), _maybe_stream(stream):
                    for _ in range(2):
                        self.compiled(image, mask)
                if stream is not None:
                    stream.synchronize()
            except Exception:
                log.exception("background compilation failed for %s; staying eager", key)
                ok = False
            with self._cond:
                self._queue.pop(0)
                (self._ready if ok else self._failed).add(key)
                self._cond.notify_all()


def _maybe_stream(stream: torch.cuda.Stream | None):
    import contextlib

    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def inductor_cache_dir() -> Path:
    """Where compiled kernels persist: ``$TORCHINDUCTOR_CACHE_DIR`` or the model cache."""
    from lama_model.weights.downloads import cache_dir

    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or cache_dir().parent / "inductor")


class GpuFusedModel(nn.Module):
    """:class:`HardwareGenerator` as a :class:`~lama_model.interface.ServedModel` for a GPU
    (works on CPU too).

    Inputs are padded (symmetric, like the pipeline's own padding) to a multiple of
    ``bucket`` so that a handful of graphs / compiled kernels cover all sizes; the output is
    cropped back and returned as float32 on the input's device.
    """

    def __init__(
        self,
        model: LamaModel,
        precision: str = "bf16",
        bucket: int | None = 64,
        cuda_graphs: bool | None = None,
        compile: bool = False,
        compile_mode: str | None = "max-autotune-no-cudagraphs",
        compile_backend: str = "inductor",
        channels_last_fft: bool = False,
        tail: str = "conv",
    ) -> None:
        super().__init__()
        generator = model.generator
        if generator is None:
            raise ValueError("needs an eager LaMa model (not TorchScript)")
        device = module_device(generator)
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(DTYPES)}, not {precision!r}")
        self.net = hardware_generator(generator, precision, channels_last_fft, tail)
        keep_source(self, generator)  # refinement runs the eager generator's backward
        self.tail = tail
        self.name = model.name
        self.size_multiple = int(model.size_multiple)
        self.precision = precision
        self.bucket = bucket
        self.cuda_graphs = device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self._device = device
        self._eager: Forward = (
            CudaGraphs(self._core, MAX_GRAPHS) if self.cuda_graphs else self._core
        )
        self.compiler: BackgroundCompiler | None = None
        self._compiled_graphs: CudaGraphs | None = None
        if compile:
            if compile_backend == "inductor":
                os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache_dir()))
            self.compiler = BackgroundCompiler(self._core, compile_mode, compile_backend)
        self.compile_mode = compile_mode if compile else None

    scripted = False
    choice: PrecisionChoice | None = None

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def input_device(self) -> torch.device:
        return self._device

    @property
    def refine_generator(self) -> nn.Module | None:
        return kept_source(self)

    @property
    def description(self) -> str:
        parts = [self.precision, "fused", "padded-channels"]
        if self.tail != "conv":
            parts.append(f"tail-{self.tail}")
        if self.bucket:
            parts.append(f"bucket{self.bucket}")
        if self.cuda_graphs:
            parts.append("cuda_graphs")
        if self.compiler is not None:
            parts.append(f"compile:{self.compile_mode or 'default'}(background)")
        return "+".join(parts)

    def _core(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image * (1 - mask), mask], dim=1)
        return self.net(x).float()

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        host = image.device
        image, mask = image.to(self._device), mask.to(self._device)
        height, width = image.shape[-2:]
        if self.bucket:
            ph = bucket_size(height, self.bucket) - height
            pw = bucket_size(width, self.bucket) - width
            image, mask = pad_symmetric(image, ph, pw), pad_symmetric(mask, ph, pw)
        image, mask = image.float().contiguous(), mask.float().contiguous()
        # Batches (dynamic batching in the server) run without graphs: one graph per batch
        # size would crowd out the per-size graphs, and a batch hides its launches anyway.
        run = self._eager if image.shape[0] == 1 else self._core
        if self.compiler is not None:
            compiled = self.compiler.get(image, mask)
            if compiled is not None:
                run = self._compiled(compiled) if image.shape[0] == 1 else compiled
        with torch.inference_mode():
            out = run(image, mask)[..., :height, :width]
        return out.to(host) if host != self._device else out.contiguous()

    def _compiled(self, compiled: Forward) -> Forward:
        if not self.cuda_graphs:
            return compiled
        if self._compiled_graphs is None:
            self._compiled_graphs = CudaGraphs(compiled, MAX_GRAPHS)
        return self._compiled_graphs


__all__ = [
    "BackgroundCompiler",
    "GpuFusedModel",
    "HardwareGenerator",
    "gpu_model",
    "hardware_generator",
    "inductor_cache_dir",
]


def gpu_model(
    model: LamaModel, precision: str = "auto", compile: bool = False
) -> GpuFusedModel | None:
    """:class:`GpuFusedModel` for a CUDA ``model`` if it passes the quality guard, else None.

    ``auto`` picks bf16 (fp16 where bf16 is missing); ``fp32`` returns None (the float32
    paths of ``accel.optimize.optimize`` serve that). An explicit reduced precision is
    used as asked.
    """
    if precision == "fp32" or model.generator is None:
        return None
    auto = precision == "auto"
    if auto:
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        candidate = GpuFusedModel(model, precision, compile=compile)
        if not auto:
            return candidate
        score = quality_guard(model, candidate, size=256)
    except (RuntimeError, ValueError) as exc:  # an unusual model or GPU: the generic path
        log.warning("tensor-core path unavailable (%s); using the generic fast path", exc)
        return None
    if score < MIN_PSNR_DB:
        log.warning("%s on this GPU: PSNR %.1f dB < %.0f; not used", precision, score, MIN_PSNR_DB)
        return None
    candidate.guard_psnr = score
    return candidate
