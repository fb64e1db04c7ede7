"""Numeric precision of inference: what each choice means, and how ``auto`` picks one.

- ``fp32``: float32 everywhere. On CUDA that includes turning TensorFloat-32 off for the
  model's calls (cuDNN enables it for convolutions by default, which is *not* float32);
- ``tf32`` (CUDA): float32 tensors, TF32 tensor-core math inside convolutions and matmuls;
- ``bf16`` / ``fp16``: reduced precision, the Fourier transforms kept in float32 (see
  :class:`lama_model.net.ffc.FourierUnit` and :mod:`lama_model.accel.fused`).

``auto`` (:func:`choose_precision`) decides by **measurement**, per device and model: each
candidate (a precision the device runs natively, or another backend's path such as
``openvino:int8``) is checked by the quality guard (PSNR on the hole against float32 on
a seeded input, at least :data:`MIN_PSNR_DB`, no NaN) and timed against float32 on the same
window, interleaved; it is kept only if it is at least :data:`SPEED_MARGIN` times as fast. The
decision is cached per machine, torch version, thread count and model
(:class:`ChoiceCache`), so later starts skip the measurement.

Tests can force both answers, the candidate list (what the hardware offers) and the timing,
with the test-only environment variable :data:`PROBE_ENV`, e.g. ``bf16=0.95`` (bf16 exists
and runs at 0.95x float32's speed) or ``none`` (no native reduced precision).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from lama_model.choices import BACKENDS, PRECISIONS
from lama_model.errors import PrecisionError, first_line
from lama_model.interface import PrecisionChoice, ServedModel, ServedWrapper

log = logging.getLogger(__name__)

MIN_PSNR_DB = 40.0
MEASURE_AGAIN = ": measured again next start"  # ends the reason of a choice not cached
SPEED_MARGIN = 1.10  # kept only if >= 10 % faster: interleaved timings vary less than that
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
PROBE_ENV = "LAMA_PRECISION_PROBE"

# name -> run  ->  name -> seconds (one figure, or every round's figure)
Timer = Callable[[Mapping[str, Callable[[], object]]], Mapping[str, "float | list[float]"]]


@contextlib.contextmanager
def float32_math(device: torch.device, allow_tf32: bool = False) -> Iterator[None]:
    """Set CUDA's TF32 switches for the calls inside, and put them back afterwards.

    PyTorch keeps them as process-wide flags (``torch.backends.cudnn.allow_tf32`` is on by
    default, ``torch.backends.cuda.matmul.allow_tf32`` off); setting them around each model
    call keeps ``fp32`` float32 without changing other code's math. The legacy switches are
    used for both libraries, so the two stay consistent. No-op off CUDA.
    """
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = allow_tf32
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


class AutocastModel(ServedWrapper):
    """Runs a served model's forward under autocast; same contract as the wrapped model."""

    def __init__(self, model: ServedModel, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = model
        self.dtype = dtype
        self.name = model.name
        self.size_multiple = model.size_multiple

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.inner(image, mask).float()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two [0, 1] tensors, in dB (inf if equal)."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def guard_input(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded image and mask (40 % holes) that the guard and the timing use."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen).to(device)
    mask = (torch.rand(1, 1, size, size, generator=gen) > 0.6).float().to(device)
    return image, mask


def quality_guard(reference: nn.Module, candidate: nn.Module, size: int = 256) -> float:
    """PSNR on the hole of ``candidate`` against float32 ``reference`` on a seeded input
    (NaN → -inf).

    Only the hole counts: it is all a user gets from the model, and served models may return
    their output composited already (an exported graph does) or not.
    """
    device = reference.device
    image, mask = guard_input(size, device)
    with torch.inference_mode():
        with float32_math(device):
            expected = reference(image, mask)
        got = candidate(image, mask)
    if not torch.isfinite(got).all():
        return -math.inf
    hole = (mask > 0.5).expand_as(expected)
    return psnr(expected[hole], got.to(expected.device)[hole])


def time_interleaved(
    runs: Mapping[str, Callable[[], object]],
    budget_s: float = 0.6,
    min_rounds: int = 2,
    max_rounds: int = 8,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of each run in every round; a round takes every run in turn.

    Interleaving shares any slowdown of a loaded machine between the runs. At least
    ``min_rounds`` rounds (so the spread between rounds shows the noise), more while
    ``budget_s`` lasts.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    start = clock()
    for done in range(max_rounds):
        if done >= min_rounds and clock() - start > budget_s:
            break
        for name, run in runs.items():
            t0 = clock()
            run()
            times[name].append(clock() - t0)
    return times


def timing_noise(times: Mapping[str, float | list[float]]) -> float:
    """Relative gap between the two fastest rounds of the noisiest run (0 with one round)."""
    noise = 0.0
    for value in times.values():
        rounds = sorted(value) if isinstance(value, list) else [value]
        if len(rounds) > 1 and rounds[0] > 0:
            noise = max(noise, rounds[1] / rounds[0] - 1)
    return noise


class ChoiceCache:
    """Decisions of ``auto`` in a small JSON file (default: the user's model cache)."""

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            from lama_model.weights.downloads import cache_dir

            path = cache_dir() / "precision-choices.json"
        self.path = Path(path)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> PrecisionChoice | None:
        entry = self._read().get(key)
        if not isinstance(entry, dict):
            return None
        precision, reason = entry.get("precision"), entry.get("reason")
        if not is_candidate_name(precision) or not isinstance(reason, str):
            return None
        return PrecisionChoice(precision, reason)

    def put(self, key: str, choice: PrecisionChoice) -> None:
        """Record ``choice``; a cache that cannot be written only costs a new measurement."""
        data = self._read()
        data[key] = {"precision": choice.precision, "reason": choice.reason}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps(data, indent=1, sort_keys=True))
            partial.replace(self.path)
        except OSError as exc:
            log.warning("cannot cache the precision choice in %s: %s", self.path, exc)


def is_candidate_name(name: object) -> bool:
    """A name ``auto`` can choose: a precision (``bf16``: the torch backend's) or
    ``backend:precision`` for another backend (``openvino:int8``)."""
    if not isinstance(name, str):
        return False
    backend, _, precision = name.rpartition(":")
    return precision in PRECISIONS[1:] and backend in ("", *BACKENDS[1:])


def machine_id(device: torch.device) -> str:
    """What the measurement depends on: the processor (or GPU), torch, the thread count."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        chip = f"{name} sm{''.join(map(str, torch.cuda.get_device_capability(index)))}"
    else:
        chip = _cpu_name() + isa_override()
    return f"{device.type}|{chip}|torch {torch.__version__}|threads {torch.get_num_threads()}"


# Variables that cap the instruction set torch's kernels and oneDNN use; a run with AVX2 forced
# on a BF16 CPU measures a different machine, so it must not reuse that CPU's decision.
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def isa_override() -> str:
    """The instruction-set caps set in the environment, e.g. ``|ATEN_CPU_CAPABILITY=avx2``."""
    return "".join(
        f"|{name}={os.environ[name]}" for name in ISA_VARIABLES if os.environ.get(name)
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_fingerprint(model: ServedModel) -> str:
    """A cheap identity of the weights: shapes and a few values of every tensor."""
    digest = hashlib.sha256(str(model.name).encode())
    for name, tensor in model.state_dict().items():
        head = tensor.detach().flatten()[:8].float().cpu().tolist()
        digest.update(f"{name}{tuple(tensor.shape)}{head}".encode())
    return digest.hexdigest()[:16]


def probe_from_env() -> tuple[list[str], Timer] | None:
    """The test-only override in :data:`PROBE_ENV`: candidates and a fake timer, or None.

    ``bf16=0.95,fp16=1.3``: these reduced precisions exist and run at that multiple of
    float32's speed; ``none``: no reduced precision runs natively here.
    """
    spec = os.environ.get(PROBE_ENV, "").strip()
    if not spec:
        return None
    speeds: dict[str, float] = {}
    if spec != "none":
        for item in spec.split(","):
            name, _, ratio = item.partition("=")
            if name.strip() not in PRECISIONS[2:]:
                raise PrecisionError(f"{PROBE_ENV}: unknown precision {name.strip()!r}")
            try:
                speeds[name.strip()] = float(ratio)
            except ValueError:
                raise PrecisionError(f"{PROBE_ENV}: {item!r} is not name=speed") from None

    def timer(runs: Mapping[str, Callable[[], object]]) -> dict[str, float]:
        return {name: 1.0 / speeds.get(name, 1.0) for name in runs}

    return list(speeds), timer


def choose_precision(
    build: Callable[[str], nn.Module],
    reference: nn.Module,
    candidates: Sequence[str],
    size: int,
    timer: Timer = time_interleaved,
    margin: float = SPEED_MARGIN,
    busy: str | None = None,
) -> tuple[nn.Module, PrecisionChoice]:
    """Measure the ``candidates`` against ``build("fp32")``; return the model to use.

    ``build(precision)`` makes the model for one precision; ``reference`` is the plain
    float32 model the quality guard compares with. A candidate that fails to build or run,
    misses the guard, or is not ``margin`` times as fast as float32 is dropped, with the
    reason in the returned :class:`PrecisionChoice`. Among the rest, the fastest wins.

    The fastest round of each counts. When rounds of the same run differ by more than the
    margin (a loaded machine), the timings cannot tell a candidate from noise: float32 is
    kept whatever they say, so the same command does not flip between precisions from one
    start to the next. ``busy`` (e.g. ``load 4.0 on 2 CPUs``): steady timings on a loaded
    machine, used but distorted. Either way the choice is marked unsettled (not cached).
    """
    baseline = build("fp32")
    notes: list[str] = []
    kept = _guarded_candidates(build, reference, candidates, size, notes)
    if not kept:
        return baseline, _choice("fp32", notes, [busy] if busy else [])
    image, mask = guard_input(size, reference.device)
    fp32_run = _runner(baseline, image, mask)
    fp32_run()  # warm, as the candidates are from the guard: the first call is slow
    runs = {name: _runner(model, image, mask) for name, (model, _) in kept.items()}
    times = timer({"fp32": fp32_run, **runs})
    noise = timing_noise(times)
    fastest = _fastest(kept, times, max(margin, 1 + noise), notes)
    unsettled = [busy] if busy else []
    if noise > margin - 1:
        overruled = ", so fp32 kept" if fastest is not None else ""
        unsettled.insert(0, f"timings varied {noise:.0%}{overruled}")
        fastest = None
    if fastest is not None:
        return kept[fastest][0], _choice(fastest, notes, unsettled)
    return baseline, _choice("fp32", notes, unsettled)


def _choice(precision: str, notes: list[str], unsettled: list[str]) -> PrecisionChoice:
    """The choice with its reason; ``unsettled``: why it is measured again next start."""
    if not unsettled:
        return PrecisionChoice(precision, "; ".join(notes))
    why = "; ".join(unsettled) + MEASURE_AGAIN
    return PrecisionChoice(precision, "; ".join([*notes, why]), settled=False)


def _guarded_candidates(
    build: Callable[[str], nn.Module],
    reference: nn.Module,
    candidates: Sequence[str],
    size: int,
    notes: list[str],
) -> dict[str, tuple[nn.Module, float]]:
    """The candidates that build, run and pass the quality guard, with their PSNR; why each
    other one was dropped goes to ``notes``."""
    kept: dict[str, tuple[nn.Module, float]] = {}
    for name in candidates:
        try:
            model = build(name)
            score = quality_guard(reference, model, size)
        except (RuntimeError, PrecisionError, ValueError) as exc:
            notes.append(f"{name} failed: {first_line(exc)[:100]}")
            continue
        if score < MIN_PSNR_DB:  # not worth timing
            notes.append(f"{name} {score:.0f} dB < {MIN_PSNR_DB:.0f}")
            continue
        kept[name] = (model, score)
    return kept


def _fastest(
    kept: Mapping[str, tuple[nn.Module, float]],
    times: Mapping[str, float | list[float]],
    needed: float,
    notes: list[str],
) -> str | None:
    """The fastest candidate at least ``needed`` times as fast as fp32 (None: none is); each
    candidate's speed goes to ``notes``."""
    seconds = {name: min(t) if isinstance(t, list) else t for name, t in times.items()}
    fastest: tuple[float, str] | None = None
    for name, (_, score) in kept.items():
        speed = seconds["fp32"] / seconds[name]
        if speed < needed:
            notes.append(f"{name} was {speed:.2f}x")
        else:
            notes.append(f"{name} {speed:.2f}x, {score:.0f} dB")
            if fastest is None or speed > fastest[0]:
                fastest = (speed, name)
    return None if fastest is None else fastest[1]


def _runner(model: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            out = model(image, mask)
        if image.device.type == "cuda":
            torch.cuda.synchronize(image.device)
        return out

    return run


__all__ = [
    "DTYPES",
    "ISA_VARIABLES",
    "MEASURE_AGAIN",
    "MIN_PSNR_DB",
    "PRECISIONS",
    "PROBE_ENV",
    "SPEED_MARGIN",
    "AutocastModel",
    "ChoiceCache",
    "PrecisionChoice",
    "PrecisionError",
    "choose_precision",
    "float32_math",
    "guard_input",
    "is_candidate_name",
    "isa_override",
    "machine_id",
    "model_fingerprint",
    "probe_from_env",
    "psnr",
    "quality_guard",
    "time_interleaved",
    "timing_noise",
]
