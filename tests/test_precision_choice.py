"""How ``--precision auto`` chooses (by measurement, cached), and that every model format ×
precision × device combination either works or stops with one line.

The hardware answers (which reduced precisions the device runs natively, and how fast) are
forced here, through ``optimize``'s ``candidates``/``timer`` parameters or the test-only
``LAMA_PRECISION_PROBE`` variable, so both outcomes are proved on any CPU.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lama_model.accel.optimize as fast
from lama_model.accel.optimize import OptimizedModel, optimize
from lama_model.accel.precision import (
    ISA_VARIABLES,
    MIN_PSNR_DB,
    PROBE_ENV,
    UNSETTLED_STARTS,
    ChoiceCache,
    PrecisionError,
    choose_precision,
    float32_math,
    machine_id,
    time_interleaved,
    timing_noise,
)
from lama_model.weights.checkpoint import LamaModel, load_model
from lama_server.commands.inpaint import build_parser, main


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LamaModel:
    return load_model(tiny_model_dir)


def speeds(**ratios: float):
    """A fake timer: fp32 takes 1 s, each named precision 1/ratio s."""
    calls: list[list[str]] = []

    def timer(runs):
        calls.append(list(runs))
        return {name: 1.0 / ratios.get(name, 1.0) for name in runs}

    timer.calls = calls  # type: ignore[attr-defined]
    return timer


def never_timed(runs):
    raise AssertionError("measured although the answer was known")


# -- the decision ----------------------------------------------------------------------------


def test_auto_keeps_bf16_when_measured_faster_and_within_the_guard(tiny: LamaModel) -> None:
    chosen = optimize(tiny, "cpu", cache=False, candidates=["bf16"], timer=speeds(bf16=1.5))
    assert (chosen.precision, chosen.description) == ("bf16", "bf16+fused")
    assert re.fullmatch(r"bf16 1\.50x, \d+ dB", chosen.choice.reason), chosen.choice.reason


@pytest.mark.parametrize("ratio", [0.95, 1.05])
def test_auto_stays_fp32_when_bf16_is_not_faster_by_the_margin(
    tiny: LamaModel, ratio: float
) -> None:
    chosen = optimize(tiny, "cpu", cache=False, candidates=["bf16"], timer=speeds(bf16=ratio))
    assert (chosen.precision, chosen.description) == ("fp32", "fp32+fused")
    assert chosen.choice.reason == f"bf16 was {ratio:.2f}x"


class Noisy(nn.Module):
    """A model whose output is far from float32's (a broken reduced-precision path)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(image, mask)
        return out + 0.1 * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))


def test_auto_stays_fp32_when_the_guard_fails_even_if_faster(tiny: LamaModel) -> None:
    def build(name: str) -> nn.Module:
        return OptimizedModel(tiny, fuse=True) if name == "fp32" else Noisy(tiny)

    model, choice = choose_precision(build, tiny, ["bf16"], 64, timer=speeds(bf16=3.0))
    assert choice.precision == "fp32" and isinstance(model, OptimizedModel)
    assert re.fullmatch(r"bf16 \d+ dB < 40", choice.reason), choice.reason


def test_auto_drops_a_candidate_that_fails_to_run(tiny: LamaModel) -> None:
    def build(name: str) -> nn.Module:
        if name == "bf16":
            raise RuntimeError("Expected both inputs to be Half, Float or Double tensors\nmore")
        return OptimizedModel(tiny, fuse=True)

    _, choice = choose_precision(build, tiny, ["bf16"], 64, timer=speeds())
    assert choice.precision == "fp32"
    assert choice.reason == "bf16 failed: Expected both inputs to be Half, Float or Double tensors"


def test_auto_picks_the_fastest_candidate_that_passes(tiny: LamaModel) -> None:
    def build(name: str) -> nn.Module:
        return OptimizedModel(tiny, fuse=True)  # same numbers for all: only the timing differs

    timer = speeds(tf32=1.3, bf16=1.8, fp16=1.6)
    _, choice = choose_precision(build, tiny, ["tf32", "bf16", "fp16"], 64, timer=timer)
    assert choice.precision == "bf16"
    assert timer.calls == [["fp32", "tf32", "bf16", "fp16"]]  # one interleaved measurement


@pytest.mark.parametrize("native", [False, True], ids=["no-bf16-cpu", "bf16-cpu"])
def test_cpu_feature_answer_decides_what_is_measured(
    tiny: LamaModel, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(fast, "cpu_supports_bf16", lambda: native)
    timer = speeds(bf16=2.0)
    chosen = optimize(tiny, "cpu", cache=False, timer=timer)
    if native:
        assert chosen.precision == "bf16" and timer.calls == [["fp32", "bf16"]]
    else:
        assert chosen.precision == "fp32" and timer.calls == []
        assert chosen.choice.reason == "no native bf16 on this CPU"


@pytest.mark.parametrize(
    ("variable", "value"), [("ONEDNN_MAX_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2")]
)
def test_an_instruction_set_cap_below_bf16_never_measures_bf16(
    tiny: LamaModel, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Under the AVX2 cap a BF16 server's bf16 is emulated (tens of times slower): timing
    it on a large window would take minutes, so it is not a candidate, on any CPU."""
    monkeypatch.setenv(variable, value)
    timer = speeds(bf16=2.0)
    chosen = optimize(tiny, "cpu", cache=False, timer=timer)
    assert chosen.precision == "fp32" and timer.calls == []
    assert not fast.cpu_supports_bf16()


def test_explicit_precision_is_obeyed(tiny: LamaModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROBE_ENV, "none")  # auto would say fp32
    chosen = optimize(tiny, "cpu", precision="bf16", cache=False, timer=never_timed)
    assert chosen.precision == "bf16" and chosen.choice.reason == "asked"
    assert optimize(tiny, "cpu", precision="fp32", timer=never_timed).precision == "fp32"


@pytest.mark.parametrize(
    ("probe", "precision", "reason"),
    [
        ("bf16=0.95", "fp32", r"bf16 was 0\.95x"),
        ("bf16=1.4", "bf16", r"bf16 1\.40x, \d+ dB"),
        ("none", "fp32", r"no native bf16 on this CPU"),
    ],
)
def test_probe_variable_forces_both_answers(
    tiny: LamaModel, monkeypatch: pytest.MonkeyPatch, probe: str, precision: str, reason: str
) -> None:
    monkeypatch.setenv(PROBE_ENV, probe)
    chosen = optimize(tiny, "cpu", cache=False)
    assert chosen.precision == precision
    assert re.fullmatch(reason, chosen.choice.reason), chosen.choice.reason


def test_bad_probe_value_is_refused(tiny: LamaModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROBE_ENV, "int4=9")
    with pytest.raises(PrecisionError, match="unknown precision"):
        optimize(tiny, "cpu", cache=False)


def test_decision_is_cached_per_machine_model_and_torch_version(
    tiny: LamaModel, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ChoiceCache(tmp_path / "choices.json")
    first = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=speeds(bf16=0.9))
    assert first.choice.reason == "bf16 was 0.90x"
    again = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=never_timed)
    assert again.precision == "fp32" and again.choice.reason == "bf16 was 0.90x; cached"
    # Another torch (or machine, thread count, model) is measured anew.
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    timer = speeds(bf16=1.5)
    assert optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=timer).precision == "bf16"
    assert timer.calls
    other = LamaModel(load_model(tiny_model_dir).net, name="other-weights")
    timer = speeds(bf16=1.5)
    optimize(other, "cpu", cache=cache, candidates=["bf16"], timer=timer)
    assert timer.calls


@pytest.mark.parametrize("variable", ["ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"])
def test_forcing_the_instruction_set_is_measured_anew_not_read_from_the_cache(
    variable: str, tiny: LamaModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: a run with AVX2 forced on a BF16 CPU must not reuse that CPU's bf16 decision."""
    for name in ISA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    cache = ChoiceCache(tmp_path / "choices.json")
    native = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=speeds(bf16=1.5))
    assert native.precision == "bf16"
    monkeypatch.setenv(variable, "avx2")
    timer = speeds(bf16=0.5)
    forced = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=timer)
    assert timer.calls and forced.precision == "fp32"
    assert f"{variable}=avx2" in machine_id(torch.device("cpu"))
    # Back to the native instruction set: its own decision is still in the cache.
    monkeypatch.delenv(variable)
    again = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=never_timed)
    assert again.precision == "bf16" and again.choice.reason.endswith("; cached")


def test_a_busy_cpu_uses_its_measurement_but_does_not_cache_it(
    tiny: LamaModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real timings on a CPU with more runnable threads than cores are not kept.

    Whatever the real timings say (steady or noisy, bf16 kept or not), the busy load is
    named last, so this holds on any machine and any load.
    """
    cache = ChoiceCache(tmp_path / "choices.json")
    monkeypatch.setattr(fast.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(fast.os, "getloadavg", lambda: (4.0, 4.0, 4.0))
    chosen = optimize(tiny, "cpu", cache=cache, candidates=["bf16"])
    assert chosen.choice.reason.endswith("load 4.0 on 2 CPUs: measured again next start")
    assert not chosen.choice.settled and not cache.path.exists()


def test_a_damaged_cache_is_measured_again(tiny: LamaModel, tmp_path: Path) -> None:
    path = tmp_path / "choices.json"
    path.write_text("{not json")
    timer = speeds(bf16=0.9)
    chosen = optimize(tiny, "cpu", cache=ChoiceCache(path), candidates=["bf16"], timer=timer)
    assert chosen.precision == "fp32" and timer.calls
    assert "bf16 was 0.90x" in path.read_text()


def test_time_interleaved_records_every_round_within_the_budget() -> None:
    now = [0.0]
    order: list[str] = []
    costs = {"fp32": [0.3, 0.2, 0.25, 0.2], "bf16": [0.1, 0.15, 0.12, 0.1]}

    def runner(name: str):
        def run() -> None:
            order.append(name)
            now[0] += costs[name][order.count(name) - 1]

        return run

    best = time_interleaved(
        {name: runner(name) for name in costs}, budget_s=0.9, clock=lambda: now[0]
    )
    assert order == ["fp32", "bf16"] * 3  # interleaved; stops once the budget is spent
    rounded = {name: [round(t, 6) for t in times] for name, times in best.items()}
    assert rounded == {"fp32": [0.3, 0.2, 0.25], "bf16": [0.1, 0.15, 0.12]}
    assert timing_noise(best) == pytest.approx(0.25)  # fp32: 0.25 s after its best 0.20 s


def test_noisy_timings_err_towards_fp32_and_are_not_cached(tiny: LamaModel, tmp_path: Path) -> None:
    """1.3x looks like a win, but rounds that differ by 50 % cannot tell it from noise."""

    def loaded_machine(runs):
        return {"fp32": [1.0, 1.5], "bf16": [1 / 1.3, 1.2]}

    cache = ChoiceCache(tmp_path / "choices.json")
    chosen = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=loaded_machine)
    assert chosen.precision == "fp32"
    assert re.fullmatch(  # bf16's best round was 1.30x, its worst slower than fp32's best
        r"bf16 1\.30x, \d+ dB; timings varied 56%, so fp32 kept: measured again next start",
        chosen.choice.reason,
    ), chosen.choice.reason
    assert not chosen.choice.settled and not kept_decisions(cache)

    def quiet_machine(runs):
        return {"fp32": [1.0, 1.02], "bf16": [1 / 1.3, 0.78]}

    chosen = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=quiet_machine)
    assert chosen.precision == "bf16" and chosen.choice.settled and cache.path.exists()


def test_noisy_timings_keep_fp32_even_when_a_candidate_looks_much_faster(
    tiny: LamaModel, tmp_path: Path
) -> None:
    """Issue 26: on a loaded machine one start measured bf16 0.47x and the next 2.14x, so
    the same command gave different outputs. Timings whose rounds disagree keep float32
    (issue 20: rounds that all agree decide, however much they vary; see the next test)."""

    def loaded_machine(runs):
        return {"fp32": [1.0, 2.0], "bf16": [0.2, 1.05]}  # bf16 5x, once slower than fp32

    cache = ChoiceCache(tmp_path / "choices.json")
    for _ in range(2):  # every start the same answer
        chosen = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=loaded_machine)
        assert chosen.precision == "fp32" and not chosen.choice.settled
        assert re.fullmatch(
            r"bf16 5\.00x, \d+ dB; timings varied 425%, so fp32 kept: measured again next start",
            chosen.choice.reason,
        ), chosen.choice.reason
    assert not kept_decisions(cache)


def test_starts_too_close_to_call_keep_float32_for_good_after_three(
    tiny: LamaModel, tmp_path: Path
) -> None:
    """A candidate at the margin (OpenVINO's int8 on an AVX2 CPU) would otherwise be measured
    again at every start: the third quiet start too close to call caches float32."""

    def at_the_margin(runs):
        return {"fp32": [1.0, 1.2], "bf16": [1 / 1.15, 1.1]}  # 1.15x best, rounds overlap

    cache = ChoiceCache(tmp_path / "choices.json")
    for start in range(1, UNSETTLED_STARTS + 1):
        chosen = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=at_the_margin)
        assert chosen.precision == "fp32"
        assert chosen.choice.settled == (start == UNSETTLED_STARTS), start
    assert chosen.choice.reason.endswith("so fp32 kept; too close to call in 3 starts: fp32 kept")
    assert kept_decisions(cache) == ["fp32"]
    again = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=at_the_margin)
    assert again.choice.reason.endswith("; cached")


def test_busy_starts_do_not_count_towards_keeping_float32(
    tiny: LamaModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timings of a loaded CPU are distorted: however many, they decide nothing for good."""
    monkeypatch.setattr(fast.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(fast.os, "getloadavg", lambda: (4.0, 4.0, 4.0))
    cache = ChoiceCache(tmp_path / "choices.json")
    for _ in range(UNSETTLED_STARTS + 1):
        chosen = optimize(tiny, "cpu", cache=cache, candidates=["bf16"])
        assert not chosen.choice.settled
    assert not kept_decisions(cache)


def kept_decisions(cache: ChoiceCache) -> list[str]:
    """The precisions ``cache`` keeps (its file may also count unsettled starts)."""
    if not cache.path.exists():
        return []
    entries = json.loads(cache.path.read_text()).values()
    return [entry["precision"] for entry in entries if "precision" in entry]


def test_a_clear_winner_is_cached_however_much_the_rounds_varied(
    tiny: LamaModel, tmp_path: Path
) -> None:
    """Issue 20: every round of bf16 beat every round of fp32 by more than the margin, so a
    repeat would decide the same: kept for later starts although fp32's rounds varied 100 %."""

    def loaded_machine(runs):
        return {"fp32": [1.0, 2.0], "bf16": [0.2, 0.21]}

    cache = ChoiceCache(tmp_path / "choices.json")
    chosen = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=loaded_machine)
    assert chosen.precision == "bf16" and chosen.choice.settled
    again = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=never_timed)
    assert again.precision == "bf16" and again.choice.reason.endswith("; cached")


def test_float32_is_cached_when_no_round_of_a_candidate_reaches_the_margin(
    tiny: LamaModel, tmp_path: Path
) -> None:
    def loaded_machine(runs):
        return {"fp32": [1.0, 1.6], "bf16": [1.5, 2.4]}  # noisy, but bf16 never 1.10x fp32

    cache = ChoiceCache(tmp_path / "choices.json")
    chosen = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=loaded_machine)
    assert chosen.precision == "fp32" and chosen.choice.settled
    assert chosen.choice.reason == "bf16 was 0.67x" and cache.path.exists()


def test_a_candidate_within_the_noise_of_float32_settles_on_float32(
    tiny: LamaModel, tmp_path: Path
) -> None:
    """OpenVINO's int8 at about 1.05x float32 with rounds varying 8 %: not worth it, and not
    worth measuring again at every start either. A candidate whose median round is 1.10x
    float32's, though its best round was not, is measured again."""

    def close(runs):
        return {"fp32": [1.0, 1.08], "bf16": [0.95, 1.02]}

    cache = ChoiceCache(tmp_path / "choices.json")
    chosen = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=close)
    assert chosen.precision == "fp32" and chosen.choice.settled and cache.path.exists()
    assert chosen.choice.reason == "bf16 was 1.05x"

    def hidden_by_fp32s_noise(runs):
        return {"fp32": [1.0, 2.0], "bf16": [0.95, 1.0]}

    _, choice = choose_precision(lambda name: OptimizedModel(tiny, fuse=True), tiny, ["bf16"],
                                 64, timer=hidden_by_fp32s_noise)  # fmt: skip
    assert choice.precision == "fp32" and not choice.settled


@pytest.mark.parametrize(
    ("fp32", "expected"),
    [([1.0, 1.2], "fp32"), ([1.2, 1.3], "bf16")],  # bf16's slowest 1.1x fp32's fastest, or not
)
def test_a_candidate_is_clear_only_if_its_slowest_round_beats_fp32_by_the_margin(
    tiny: LamaModel, fp32: list[float], expected: str
) -> None:
    def build(name: str) -> nn.Module:
        return OptimizedModel(tiny, fuse=True)

    def timer(runs):
        return {"fp32": fp32, "bf16": [0.5, 1.0]}  # best round 2x either way

    _, choice = choose_precision(build, tiny, ["bf16"], 64, timer=timer)
    assert (choice.precision, choice.settled) == (expected, expected == "bf16")


def test_the_winner_must_beat_every_round_of_the_other_candidates(tiny: LamaModel) -> None:
    def build(name: str) -> nn.Module:
        return OptimizedModel(tiny, fuse=True)

    def timer(runs):  # bf16 fastest by its best round, but fp16 was once faster than it
        return {"fp32": [2.0, 2.1], "bf16": [1.0, 1.3], "fp16": [1.2, 1.25]}

    _, choice = choose_precision(build, tiny, ["bf16", "fp16"], 64, timer=timer)
    assert choice.precision == "fp32" and not choice.settled
    assert "so fp32 kept" in choice.reason


def test_a_fallback_is_measured_only_when_what_replaces_it_is_not_kept(tiny: LamaModel) -> None:
    built: list[str] = []

    def build(name: str) -> nn.Module:
        built.append(name)
        return Noisy(tiny) if name in failing else OptimizedModel(tiny, fuse=True)

    timer = speeds(bf16=2.0, fp16=1.5)
    failing: set[str] = set()
    _, choice = choose_precision(build, tiny, ["fp16", "bf16"], 64, timer=timer,
                                 fallbacks={"fp16": "bf16"})  # fmt: skip
    assert built == ["fp32", "bf16"] and timer.calls == [["fp32", "bf16"]]
    assert choice.precision == "bf16" and "fp16 not measured: bf16 kept" in choice.reason
    built.clear()
    failing.add("bf16")  # fails the guard: its fallback is measured
    _, choice = choose_precision(build, tiny, ["fp16", "bf16"], 64, timer=timer,
                                 fallbacks={"fp16": "bf16"})  # fmt: skip
    assert built == ["fp32", "bf16", "fp16"] and choice.precision == "fp16"


def test_the_choice_records_its_window_and_times_and_the_cache_keeps_them(
    tiny: LamaModel, tmp_path: Path
) -> None:
    cache = ChoiceCache(tmp_path / "choices.json")
    chosen = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=speeds(bf16=2.0),
                      guard_size=96)  # fmt: skip
    measured = (96, (("fp32", 1.0), ("bf16", 0.5)))
    assert (chosen.choice.window, chosen.choice.seconds) == measured
    again = optimize(tiny, "cpu", cache=cache, candidates=["bf16"], timer=never_timed,
                     guard_size=96)  # fmt: skip
    assert (again.choice.window, again.choice.seconds) == measured


def test_a_busy_and_noisy_measurement_gives_both_reasons(tiny: LamaModel) -> None:
    """Which of the two fires first does not matter: the reason names both."""

    def build(name: str) -> nn.Module:
        return OptimizedModel(tiny, fuse=True)

    def noisy(runs):  # bf16's best round short of 1.10x, its median round beyond it
        return {"fp32": [1.0, 1.3], "bf16": [0.95, 1.0]}

    _, choice = choose_precision(build, tiny, ["bf16"], 64, timer=noisy, busy="load 4.0 on 2 CPUs")
    assert choice.precision == "fp32" and not choice.settled
    assert choice.reason == (
        "bf16 was 1.05x; timings varied 30%; load 4.0 on 2 CPUs: measured again next start"
    )


def test_real_measurement_on_this_machine_gives_a_reason(tiny: LamaModel) -> None:
    """No forcing: whatever this CPU answers, the choice is one of the two and says why."""
    chosen = optimize(tiny, "cpu", cache=False)
    assert chosen.precision in ("fp32", "bf16") and chosen.choice.reason


# -- TorchScript and the format × precision matrix ---------------------------------------------


def test_torchscript_runs_float32_under_auto_and_refuses_reduced_precision(
    golden_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = load_model(golden_dir / "tiny-lama.pt", allow_torchscript=True)
    monkeypatch.setenv(PROBE_ENV, "bf16=3")  # even where bf16 would pay
    chosen = optimize(scripted, "cpu", cache=False)
    assert chosen.precision == "fp32" and chosen.choice.reason == "TorchScript: float32 only"
    with pytest.raises(PrecisionError, match="TorchScript model runs in float32 only"):
        optimize(scripted, "cpu", precision="bf16")


FORMATS = ["folder", "ckpt", "pth", "torchscript", "onnx"]
PRECISIONS = ["auto", "fp32", "tf32", "bf16", "fp16"]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def expected_outcome(fmt: str, precision: str, device: str) -> int:
    """0 works; 2 an impossible choice of flags (README: exit codes)."""
    if precision in ("auto", "fp32"):
        return 0
    if fmt == "onnx":
        return 2  # the onnxruntime backend runs float32 only
    if precision == "tf32" or precision == "fp16":
        return 0 if device == "cuda" and not (fmt == "torchscript" and precision == "fp16") else 2
    return 2 if fmt == "torchscript" else 0  # bf16: TorchScript runs float32 only


def model_flags(fmt: str) -> list[str]:
    flags = ["--backend", "onnxruntime"] if fmt == "onnx" else []
    if fmt == "torchscript" and "--allow-torchscript" in build_parser().format_help():
        flags.append("--allow-torchscript")  # TorchScript runs code: opt-in where required
    return flags


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_precision_and_device_works_or_says_why_in_one_line(
    tiny_model_files,
    golden_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    precision: str,
    device: str,
) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")  # an optional extra
    case = golden_dir / "case-b"
    out = tmp_path / "out.png"
    code = main([str(case / "image.png"), str(case / "mask.png"), "-o", str(out), "--model",
                 str(tiny_model_files[fmt]), "--device", device, "--precision", precision,
                 *model_flags(fmt)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == expected_outcome(fmt, precision, device), err
    if code == 0:
        result = np.asarray(Image.open(out)).astype(np.float64)
        expected = np.load(case / "expected.npy") * 255
        hole = np.asarray(Image.open(case / "mask.png").convert("L")) > 127
        mse = np.mean(((result - expected) / 255)[hole] ** 2)
        assert 10 * math.log10(1 / max(mse, 1e-12)) >= 30  # the fill is the model's
    else:
        assert err.count("\n") == 1 and err.startswith("lama-inpaint: error: "), err
        assert "Traceback" not in err and not out.exists()


def test_server_refuses_torchscript_in_bf16_with_one_line(golden_dir: Path, tmp_path: Path):
    model = golden_dir / "tiny-lama.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "lama_server.commands.serve", "--model", str(model), "--device", "cpu",
         "--precision", "bf16", "--token-file", str(tmp_path / "token"),
         *(["--allow-torchscript"] if "--allow-torchscript" in _server_help() else [])],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 78, proc.stderr  # a configuration error
    errors = [line for line in proc.stderr.splitlines() if " INFO " not in line]  # log lines
    assert len(errors) == 1 and errors[0].startswith("lama-server: error: "), proc.stderr
    assert "float32 only" in errors[0]


def _server_help() -> str:
    from lama_server.commands.serve import _serve_parser

    return _serve_parser().format_help()


@pytest.mark.parametrize(
    ("probe", "path"),
    [("bf16=0.95", "fp32+fused (bf16 was 0.95x)"), ("bf16=2", "bf16+fused (bf16 2.00x, ")],
)
def test_ready_line_and_info_say_what_auto_chose_and_why(
    server_factory, monkeypatch: pytest.MonkeyPatch, probe: str, path: str
) -> None:
    from lama_client.client import LamaClient

    monkeypatch.setenv(PROBE_ENV, probe)  # inherited by the server process
    server = server_factory("--no-warmup")
    ready = next(line for line in server.log().splitlines() if "ready on" in line)
    assert path in ready
    with LamaClient(server.endpoint, server.token) as client:
        info = client.info()
    assert info["path"].startswith(path) and info["precision"] == path.split("+")[0]
    ratio = float(probe.partition("=")[2])
    assert info["devices"][0]["measured"] == {  # the probe's timings, on the CPU's window
        "window": fast.CPU_WINDOW, "seconds": {"fp32": 1.0, "bf16": round(1 / ratio, 4)}
    }


# -- CUDA (run where a GPU is present) ------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_float32_math_changes_nothing_off_cuda() -> None:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with float32_math(torch.device("cpu"), allow_tf32=True):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


class TF32Spy(nn.Module):
    """Records the TF32 switches as the model runs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.name, self.size_multiple, self.seen = "spy", 8, []

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return self.model(image, mask)


@cuda
@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("tf32", True)])
def test_fp32_on_cuda_turns_tf32_off_for_the_call_only(
    tiny_model_dir: Path, precision: str, tf32: bool
) -> None:  # pragma: no cover - GPU
    spy = TF32Spy(load_model(tiny_model_dir, "cuda"))
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    model = OptimizedModel(spy, precision=precision)
    with torch.inference_mode():
        model(torch.rand(1, 3, 64, 64, device="cuda"), torch.ones(1, 1, 64, 64, device="cuda"))
    assert spy.seen == [(tf32, tf32)]
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@cuda
@pytest.mark.parametrize("case", ["case-a", "case-b"])
def test_cuda_fp32_keeps_the_official_contract(
    golden_dir: Path, tmp_path: Path, case: str
) -> None:  # pragma: no cover - GPU
    folder = golden_dir / case
    out = tmp_path / "out.png"
    code = main([str(folder / "image.png"), str(folder / "mask.png"), "-o", str(out), "--model",
                 str(golden_dir / "tiny-lama"), "--device", "cuda", "--precision", "fp32",
                 "--mask-grow", "0", "--feather", "0", "--strategy", "original"])  # fmt: skip
    assert code == 0
    result = np.asarray(Image.open(out)).astype(np.float64)
    assert np.abs(result - np.load(folder / "expected.npy") * 255).max() <= 1.0


@cuda
def test_cuda_auto_choice_passes_the_guard(tiny_model_dir: Path) -> None:  # pragma: no cover
    model = load_model(tiny_model_dir, "cuda")
    chosen = optimize(model, "cuda", cache=False)
    assert chosen.precision in ("fp32", "tf32", "bf16", "fp16") and chosen.choice.reason
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(9))
    mask = (torch.rand(1, 1, 128, 128, generator=torch.Generator().manual_seed(8)) > 0.5).float()
    with torch.inference_mode(), float32_math(torch.device("cuda")):
        expected = model(image.cuda(), mask.cuda()).cpu()
    with torch.inference_mode():
        got = chosen(image, mask).cpu()
    mse = torch.mean((got - expected) ** 2).item()
    assert 10 * math.log10(1 / max(mse, 1e-12)) >= MIN_PSNR_DB
