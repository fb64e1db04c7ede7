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
window, interleaved; it is kept only if it is at least :data:`SPEED_MARGIN` times as fast. A
clear decision (every timing round agrees on it, however much the rounds varied) is cached
per machine, torch version, thread count and model (:class:`ChoiceCache`), so later starts
skip the measurement; one too close to call is measured again at the next start, until
:data:`UNSETTLED_STARTS` quiet starts could not call it: float32 is then cached.

Tests can force both answers, the candidate list (what the hardware offers) and the timing,
with the test-only environment variable :data:`PROBE_ENV`, e.g. ``bf16=0.95`` (bf16 exists
and runs at 0.95x float32's speed) or ``none`` (no native reduced precision).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import platform
import statistics
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
# Quiet starts too close to call before float32 is kept for good: on an AVX2 CPU OpenVINO's
# int8 sits at the margin (1.03-1.30x in seven starts), and without a limit every server
# start spent about 20 s of every core measuring it again in the background.
UNSETTLED_STARTS = 3
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
    return hole_psnr(reference_output(reference, size), candidate, size)


def reference_output(reference: nn.Module, size: int) -> torch.Tensor:
    """``reference``'s float32 output on the guard's seeded ``size``² input."""
    image, mask = guard_input(size, reference.device)
    with torch.inference_mode(), float32_math(reference.device):
        return reference(image, mask)


def hole_psnr(expected: torch.Tensor, candidate: nn.Module, size: int) -> float:
    """:func:`quality_guard` against an ``expected`` output already computed (by
    :func:`reference_output`)."""
    image, mask = guard_input(size, expected.device)
    with torch.inference_mode():
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
        window, seconds = entry.get("window"), entry.get("seconds")
        try:
            times = tuple((str(name), float(t)) for name, t in seconds)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            times = None  # written before windows were kept, or damaged: the reason stands
        if not isinstance(window, int) or times is None:
            return PrecisionChoice(precision, reason)
        return PrecisionChoice(precision, reason, True, window, times)

    def count_unsettled(self, key: str) -> int:
        """One more start for ``key`` that was too close to call; how many there have been.

        Kept under the decision's own key, in an entry without a precision, which
        :meth:`get` reads as no decision and :meth:`put` replaces."""
        data = self._read()
        entry = data.get(key)
        before = entry.get("unsettled") if isinstance(entry, dict) else None
        count = (before if isinstance(before, int) and before >= 0 else 0) + 1
        if isinstance(entry, dict) and "precision" in entry:
            return count  # a decision is kept: leave it (a concurrent start wrote it)
        data[key] = {"unsettled": count}
        self._write(data)
        return count

    def put(self, key: str, choice: PrecisionChoice) -> None:
        """Record ``choice``; a cache that cannot be written only costs a new measurement."""
        data = self._read()
        data[key] = {"precision": choice.precision, "reason": choice.reason}
        if choice.window is not None and choice.seconds is not None:
            data[key].update(window=choice.window, seconds=[list(t) for t in choice.seconds])
        self._write(data)

    def _write(self, data: dict) -> None:
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


# oneDNN's instruction-set levels without native bf16 math: under such a cap bf16 is emulated
# (tens of times slower) in torch's and OpenVINO's kernels alike. OpenVINO 2026.4's CPU plug-in
# takes the cap for its own kernels too (ONEDNN_MAX_CPU_ISA=SSE41 on an AVX2 CPU turned its
# convolution, element-wise and RDFT kernels into jit_sse42 ones), while its
# OPTIMIZATION_CAPABILITIES and /proc/cpuinfo still name the processor's bf16.
CAPS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def isa_cap_allows_bf16() -> bool:
    """False when :data:`ISA_VARIABLES` cap the kernels below native bf16 (e.g. the AVX2
    laptop case forced on a BF16 server); True when nothing is capped."""
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    return onednn not in CAPS_WITHOUT_BF16 and aten not in ("default", "avx2")


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
    reference: nn.Module | None,
    candidates: Sequence[str],
    size: int,
    timer: Timer = time_interleaved,
    margin: float = SPEED_MARGIN,
    busy: str | None = None,
    fallbacks: Mapping[str, str] | None = None,
) -> tuple[nn.Module, PrecisionChoice]:
    """Measure the ``candidates`` against ``build("fp32")`` on a ``size``² window; return
    the model to use.

    ``build(precision)`` makes the model for one precision; ``reference`` is the float32
    model the quality guard compares with (None: ``build("fp32")``, float32 on the same
    weights, whose guard run then doubles as its warm-up at the window: one forward of the
    unfused model fewer, seconds on a CPU at 512²). A candidate that fails to build or run,
    misses the guard, or whose best round is not ``margin`` times as fast as float32's best
    is dropped, with the reason in the returned :class:`PrecisionChoice`. Among the rest,
    the fastest (by best round) wins. ``fallbacks`` maps a candidate to one that makes it
    pointless: ``{"openvino:fp32": "openvino:int8"}`` measures OpenVINO's float32 only when
    its int8 graph was not kept (int8 was the faster of the two wherever it was measured).

    Whether the decision is **settled** (kept for later starts) does not depend on how much
    the rounds varied but on whether they could have decided otherwise (:func:`_clear`):
    every round of the winner is ``margin`` times as fast as every round of float32 and
    faster than every round of the other kept candidates; or, when float32 wins (no
    candidate's best round was ``margin`` times as fast as float32's), no candidate's median
    round was either: a path within the noise of float32 is not worth measuring again at
    every start (on an AVX2 CPU OpenVINO's int8 measured 1.02-1.06x at 512², which kept a
    server re-measuring for half a minute at each start). A loaded machine that
    slows some rounds keeps a clear winner clear. When it is too close to call, float32 is
    served whatever the best rounds said (the same command does not flip between precisions
    from one start to the next) and the choice is marked unsettled: measured again next
    start. ``busy`` (e.g. ``load 4.0 on 2 CPUs``): steady timings on a loaded machine, used
    but distorted, so never settled either.
    """
    baseline = build("fp32")
    notes: list[str] = []
    guarded = reference if reference is not None else baseline
    kept = _guarded_candidates(build, guarded, candidates, size, notes, fallbacks or {})
    if not kept:
        return baseline, _choice("fp32", notes, [busy] if busy else [])
    image, mask = guard_input(size, baseline.device)
    runs = {"fp32": _runner(baseline, image, mask)}
    runs.update((name, _runner(model, image, mask)) for name, (model, _) in kept.items())
    if reference is not None:
        runs["fp32"]()  # warm (the candidates are, from the guard): a first call is slow
    times = {name: sorted(t) if isinstance(t, list) else [t]
             for name, t in timer(runs).items()}  # fmt: skip
    fastest = _fastest(kept, times, margin, notes)
    unsettled = [busy] if busy else []
    if not _clear(times, fastest or "fp32", margin):
        overruled = ", so fp32 kept" if fastest is not None else ""
        unsettled.insert(0, f"timings varied {timing_noise(times):.0%}{overruled}")
        fastest = None
    seconds = tuple((name, round(t[0], 4)) for name, t in times.items())
    chosen = kept[fastest][0] if fastest is not None else baseline
    return chosen, _choice(fastest or "fp32", notes, unsettled, (size, seconds))


def _clear(times: Mapping[str, list[float]], winner: str, margin: float) -> bool:
    """Whether every round agrees on ``winner`` (``times``: each run's sorted rounds).

    A candidate wins clearly when its slowest round is ``margin`` times as fast as float32's
    fastest, and faster than the fastest round of every other candidate; float32 when no
    candidate's median round is ``margin`` times as fast as float32's median round (its best
    round was not either, or it would have won).
    """
    fp32 = times["fp32"]
    others = [rounds for name, rounds in times.items() if name not in ("fp32", winner)]
    if winner == "fp32":
        return all(statistics.median(fp32) < margin * statistics.median(rounds)
                   for rounds in others)  # fmt: skip
    slowest = times[winner][-1]
    return fp32[0] >= margin * slowest and all(rounds[0] >= slowest for rounds in others)


def settled_after_starts(choice: PrecisionChoice, starts: int) -> PrecisionChoice:
    """``choice`` (float32, too close to call) kept for good after ``starts`` quiet starts
    that could not tell its candidates from float32: they are within the noise of it."""
    reason = choice.reason.removesuffix(MEASURE_AGAIN)
    return dataclasses.replace(
        choice, reason=f"{reason}; too close to call in {starts} starts: fp32 kept", settled=True
    )


def _choice(
    precision: str,
    notes: list[str],
    unsettled: list[str],
    measured: tuple[int, tuple[tuple[str, float], ...]] | None = None,
) -> PrecisionChoice:
    """The choice with its reason; ``unsettled``: why it is measured again next start;
    ``measured``: the window and each run's best seconds."""
    window, seconds = measured or (None, None)
    if not unsettled:
        return PrecisionChoice(precision, "; ".join(notes), True, window, seconds)
    why = "; ".join(unsettled) + MEASURE_AGAIN
    return PrecisionChoice(precision, "; ".join([*notes, why]), False, window, seconds)


def _guarded_candidates(
    build: Callable[[str], nn.Module],
    reference: nn.Module,
    candidates: Sequence[str],
    size: int,
    notes: list[str],
    fallbacks: Mapping[str, str],
) -> dict[str, tuple[nn.Module, float]]:
    """The candidates that build, run and pass the quality guard, with their PSNR; why each
    other one was dropped goes to ``notes``. A candidate whose replacement in ``fallbacks``
    is kept is not built at all (it would cost its build, guard and timing for nothing)."""
    kept: dict[str, tuple[nn.Module, float]] = {}
    expected = functools.cache(lambda: reference_output(reference, size))  # once, if at all
    for name in sorted(candidates, key=lambda c: c in fallbacks):  # replacements first
        if fallbacks.get(name) in kept:
            notes.append(f"{name} not measured: {fallbacks[name]} kept")
            continue
        try:
            model = build(name)
            score = hole_psnr(expected(), model, size)
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
    times: Mapping[str, list[float]],
    needed: float,
    notes: list[str],
) -> str | None:
    """The fastest candidate whose best round is at least ``needed`` times as fast as fp32's
    (None: none is); each candidate's speed goes to ``notes``."""
    seconds = {name: min(t) for name, t in times.items()}
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
    "UNSETTLED_STARTS",
    "AutocastModel",
    "ChoiceCache",
    "PrecisionChoice",
    "PrecisionError",
    "choose_precision",
    "settled_after_starts",
    "float32_math",
    "guard_input",
    "hole_psnr",
    "is_candidate_name",
    "isa_cap_allows_bf16",
    "isa_override",
    "machine_id",
    "model_fingerprint",
    "probe_from_env",
    "psnr",
    "quality_guard",
    "reference_output",
    "time_interleaved",
    "timing_noise",
]
