"""``--backend openvino`` and OpenVINO's paths in ``auto`` (issue 20), on the tiny model.

Skipped only where OpenVINO is not installed (CI installs the ``openvino`` extra). Nothing here
expects bf16: whether a CPU has it natively decides that, never a test.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import start_server
from PIL import Image

from lama_model.accel import precision as precision_module
from lama_model.accel.openvino_ir_cache import cached_ir, load_ir, save_ir
from lama_model.accel.optimize import AUTO_BACKENDS_ENV, optimize
from lama_model.accel.precision import ChoiceCache, guard_input, psnr
from lama_model.weights.checkpoint import load_model

ov = pytest.importorskip("openvino", reason="OpenVINO not installed: pip install -e '.[openvino]'")

OFFICIAL_FLAGS = ["--device", "cpu", "--precision", "fp32", "--mask-grow", "0", "--feather", "0",
                  "--strategy", "original"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, torch.device("cpu"))


def _composited(model, size: int = 128) -> torch.Tensor:
    image, mask = guard_input(size, torch.device("cpu"))
    with torch.inference_mode():
        out = model(image, mask)
    return mask * out + (1 - mask) * image


def test_openvino_fp32_matches_torch_fp32(tiny, tiny_openvino):
    served = tiny_openvino("fp32")
    assert served.description == "openvino:fp32" and served.precision == "fp32"
    expected, got = _composited(tiny, 96), _composited(served, 96)
    # float32 both ways, different kernels: rounding only (the golden contract is one level).
    assert (expected - got).abs().max().item() < 1e-4


def test_int8_stays_within_the_guard_of_float32(tiny, tiny_openvino):
    served = tiny_openvino("int8")
    quality = psnr(_composited(tiny), _composited(served))
    assert precision_module.MIN_PSNR_DB <= quality < 200  # int8: close, but not float32


def test_one_compiled_graph_serves_every_size(tiny, tiny_openvino):
    served = tiny_openvino("int8")
    for height, width in ((72, 136), (200, 64)):  # multiples of 8, nothing else
        image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
        mask = torch.zeros(1, 1, height, width)
        mask[..., 8:40, 8:40] = 1
        out = served(image, mask)
        assert out.shape == (1, 3, height, width)
        with torch.inference_mode():
            expected = tiny(image, mask)
        hole = (mask > 0.5).expand_as(out)
        assert psnr(expected[hole], out[hole]) >= precision_module.MIN_PSNR_DB
    assert served.compiled


def _faster(ratio: float):
    """A timer: every candidate ``ratio`` times as fast as float32."""
    return lambda runs: {name: 1.0 if name == "fp32" else 1.0 / ratio for name in runs}


def test_auto_chooses_int8_when_it_is_faster_and_within_the_guard(tiny, tiny_openvino, tmp_path):
    tiny_openvino("int8")  # converted and calibrated once (IR cached for the session)
    chosen = optimize(tiny, "cpu", candidates=["openvino:int8"], timer=_faster(2.0),
                      cache=ChoiceCache(tmp_path / "choices.json"))  # fmt: skip
    assert chosen.description == "openvino:int8"
    assert chosen.choice.precision == "openvino:int8" and "2.00x" in chosen.choice.reason


def test_a_path_that_fails_the_guard_falls_back_with_its_reason(
    tiny, tiny_openvino, monkeypatch, tmp_path
):
    tiny_openvino("int8")
    monkeypatch.setattr(precision_module, "MIN_PSNR_DB", 200.0)  # no int8 model holds 200 dB
    chosen = optimize(tiny, "cpu", candidates=["openvino:int8"], timer=_faster(9.0),
                      cache=ChoiceCache(tmp_path / "choices.json"))  # fmt: skip
    assert chosen.description == "fp32+fused"
    assert chosen.choice.precision == "fp32"
    assert "openvino:int8" in chosen.choice.reason and "< 200" in chosen.choice.reason


def test_the_decision_is_cached_per_instruction_set_and_openvino_version(
    tiny, tiny_openvino, monkeypatch, tmp_path
):
    tiny_openvino("int8")
    cache = ChoiceCache(tmp_path / "choices.json")

    def decide() -> set[str]:
        optimize(tiny, "cpu", candidates=["openvino:int8"], timer=_faster(2.0), cache=cache)
        return set(json.loads(cache.path.read_text()))

    first = decide()
    assert decide() == first  # the same setting reuses its decision
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = decide()
    assert len(capped) == 2 and any("ONEDNN_MAX_CPU_ISA=AVX2" in key for key in capped - first)
    monkeypatch.setattr(ov, "__version__", "1999.0.0-test")
    newer = decide()
    assert len(newer) == 3 and any("openvino 1999.0.0-test" in key for key in newer - capped)


def test_auto_measures_openvino_only_when_allowed(tiny, monkeypatch):
    from lama_model.accel.optimize import openvino_candidates

    monkeypatch.setenv(AUTO_BACKENDS_ENV, "torch")
    assert openvino_candidates(tiny, torch.device("cpu"), compile=False) == []
    monkeypatch.setenv(AUTO_BACKENDS_ENV, "torch,openvino")
    found = openvino_candidates(tiny, torch.device("cpu"), compile=False)
    assert found[:2] == ["openvino:fp32", "openvino:int8"]
    monkeypatch.delenv(AUTO_BACKENDS_ENV)
    assert openvino_candidates(tiny, torch.device("cpu"), compile=False) == found


def test_an_instruction_set_cap_below_bf16_leaves_openvino_bf16_out(tiny, monkeypatch):
    from lama_model.accel.openvino_runtime import cpu_has_native_bf16
    from lama_model.accel.optimize import openvino_candidates

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the AVX2 laptop case on any CPU
    assert not cpu_has_native_bf16()
    found = openvino_candidates(tiny, torch.device("cpu"), compile=False, every=True)
    assert found == ["openvino:fp32", "openvino:int8"]


KERNELS_UNDER_A_CAP = """
import json, sys, torch
from lama_model.accel.openvino_runtime import openvino_model
from lama_model.weights.checkpoint import load_model
served = openvino_model(load_model(sys.argv[1], torch.device("cpu")), "fp32")
served(torch.rand(1, 3, 64, 64), torch.ones(1, 1, 64, 64))
print(json.dumps(sorted(served.kernels())))
"""


def test_openvino_takes_the_onednn_instruction_set_cap_for_all_its_kernels(
    tiny_model_dir, tiny_openvino
):
    """What bench/speed.py --isa relies on (and checks per row): capped below every x86 CPU
    this runs on, OpenVINO's convolutions (oneDNN) and its own float kernels (RDFT,
    element-wise) all drop to the cap; only integer shape arithmetic (the Fourier units'
    ReduceProd, *_i32) keeps the CPU's level. The cap is read once per process, hence the
    child."""
    tiny_openvino("fp32")  # converted once: the child reads the session's cached graph
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="SSE41")
    out = subprocess.run([sys.executable, "-c", KERNELS_UNDER_A_CAP, str(tiny_model_dir)],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    kernels = json.loads(out.stdout.strip().splitlines()[-1])
    assert any("sse4" in k for k in kernels), kernels
    compute = [k for k in kernels if not k.endswith(("_i32", "_i64"))]
    assert not [k for k in compute if "avx" in k or "amx" in k], kernels


def _small_ir_model():
    """A two-operation OpenVINO model: quick to save, load and tamper with."""
    from openvino import opset13 as ops

    x = ops.parameter([1, 4], np.float32, name="x")
    weights = ops.constant(np.arange(16, dtype=np.float32).reshape(4, 4))
    return ov.Model([ops.matmul(x, weights, False, False)], [x], "small")


def test_a_corrupt_cached_ir_is_refused_and_rebuilt(tmp_path):
    folder = tmp_path / "openvino"
    xml = folder / "small.xml"
    save_ir(_small_ir_model(), xml)
    assert load_ir(xml) is not None
    data = bytearray(xml.with_suffix(".bin").read_bytes())
    data[0] ^= 0xFF  # one weight altered
    xml.with_suffix(".bin").write_bytes(bytes(data))
    assert load_ir(xml) is None
    rebuilt = []
    model, reused = cached_ir(xml, lambda: rebuilt.append(1) or _small_ir_model())
    assert not reused and rebuilt == [1] and load_ir(xml) is not None


@pytest.mark.skipif(os.name != "posix", reason="POSIX folder permissions")
def test_a_cached_ir_in_a_folder_others_can_write_is_not_loaded(tmp_path):
    folder = tmp_path / "openvino"
    xml = folder / "small.xml"
    save_ir(_small_ir_model(), xml)
    assert stat.S_IMODE(folder.stat().st_mode) & 0o022 == 0  # made private
    folder.chmod(0o777)
    assert load_ir(xml) is None
    folder.chmod(0o700)
    assert load_ir(xml) is not None


def test_lama_inpaint_backend_openvino_matches_official(tmp_path, golden_dir, tiny_openvino):
    from lama_server.commands.inpaint import main

    tiny_openvino("fp32")  # the session's cached IR: the command reads it instead of converting
    case = golden_dir / "case-a"
    out = tmp_path / "out.png"
    code = main([str(case / "image.png"), str(case / "mask.png"), "-o", str(out), "--model",
                 str(golden_dir / "tiny-lama"), "--backend", "openvino", *OFFICIAL_FLAGS])  # fmt: skip
    assert code == 0
    result = np.asarray(Image.open(out)).astype(np.float64)
    expected = np.load(case / "expected.npy") * 255
    assert np.abs(result - expected).max() <= 1.0


def test_lama_server_backend_openvino_serves_int8(tmp_path, tiny_model_dir, tiny_openvino):
    from lama_client.client import ImageData, LamaClient

    tiny_openvino("int8")
    server = start_server(tmp_path, tiny_model_dir, "--backend", "openvino", "--precision",
                          "int8", timeout=240)  # fmt: skip
    try:
        with LamaClient(server.endpoint, server.token, use_pyzmq=False) as c:
            info = c.info()
            rgba = np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8)
            mask = np.zeros((64, 64), np.uint8)
            mask[16:40, 20:44] = 255
            reply = c.inpaint(ImageData(64, 64, "RGBA8", rgba.tobytes()), mask.tobytes(),
                              {"mask_grow": 0, "feather": 0})  # fmt: skip
    finally:
        server.stop()
    assert info["backend"] == "openvino" and info["precision"] == "int8"
    assert info["path"].startswith("openvino:int8")
    got = np.frombuffer(reply.data, np.uint8).reshape(64, 64, 4)
    outside = mask == 0
    assert np.array_equal(got[outside], rgba[outside])  # only the hole changes
    assert not np.array_equal(got[~outside], rgba[~outside])


def test_backend_openvino_errors_are_one_line(tiny_model_dir):
    from lama_model.errors import BackendError, PrecisionError
    from lama_model.factory import load_for_inference

    with pytest.raises(BackendError, match="--device cpu"):
        load_for_inference(tiny_model_dir, torch.device("meta"), "fp32", backend="openvino")
    with pytest.raises(PrecisionError, match="--backend openvino"):
        load_for_inference(tiny_model_dir, torch.device("cpu"), "int8", backend="torch")


def test_background_choice_serves_the_quick_model_until_the_measurement_ends(tiny):
    import threading

    from lama_model.accel.background_choice import BackgroundChoice
    from lama_model.accel.optimize import OptimizedModel
    from lama_model.interface import PrecisionChoice

    quick = OptimizedModel(tiny, fuse=True)
    quick.choice = PrecisionChoice("fp32", "no native bf16 on this CPU")
    slow = OptimizedModel(tiny, fuse=False)
    slow.choice = PrecisionChoice("fp32", "measured")
    release = threading.Event()
    served = BackgroundChoice(quick, lambda: release.wait(60) and slow)
    assert served.inner is quick and served.compiler.pending_shapes == 1
    assert "measuring OpenVINO" in served.choice.reason and not served.choice.settled
    image, mask = guard_input(64, torch.device("cpu"))
    with torch.inference_mode():
        assert torch.equal(served(image, mask), quick(image, mask))
    release.set()
    assert served.wait(60)
    assert served.inner is slow and served.compiler.ready_shapes == 1
    assert served.choice.reason == "measured" and served.description == "fp32"


def test_a_failed_background_measurement_keeps_the_quick_model(tiny):
    from lama_model.accel.background_choice import BackgroundChoice
    from lama_model.accel.optimize import OptimizedModel

    quick = OptimizedModel(tiny, fuse=True)

    def fail():
        raise RuntimeError("calibration ran out of memory\nsecond line")

    served = BackgroundChoice(quick, fail)
    assert served.wait(60)
    assert served.inner is quick and served.failure == "calibration ran out of memory"


def test_the_server_answers_ping_and_info_while_auto_measures_openvino(
    tmp_path, tiny_model_dir, monkeypatch
):
    from lama_client.client import LamaClient

    # A cache of its own: the server has to convert and calibrate, which takes a while.
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(AUTO_BACKENDS_ENV)
    server = start_server(tmp_path, tiny_model_dir, timeout=120)
    try:
        with LamaClient(server.endpoint, server.token, use_pyzmq=False) as c:
            assert c.ping()["pong"] is True
            info = c.info()
    finally:
        server.stop()
    (device,) = info["devices"]
    assert device["compile"] == {"ready": 0, "pending": 1}  # still measuring
    # torch's quick choice serves meanwhile: fp32, or bf16 where the CPU has it natively.
    assert info["path"].split(" ")[0] in ("fp32+fused", "bf16+fused")
    assert "measuring OpenVINO" in info["path"]


def test_openvino_and_background_models_keep_the_served_contract(tiny, tiny_openvino):
    import threading

    from lama_model.accel.background_choice import BackgroundChoice
    from lama_model.accel.optimize import OptimizedModel
    from lama_model.choices import PRECISIONS
    from lama_model.interface import ServedModel

    hold = threading.Event()
    measuring = BackgroundChoice(OptimizedModel(tiny, fuse=True), lambda: hold.wait(60) and tiny)
    for model in (tiny_openvino("fp32"), tiny_openvino("int8"), measuring):
        assert isinstance(model, ServedModel)
        assert model.precision in PRECISIONS[1:] and model.description
        assert model.device.type == "cpu" and model.input_device.type == "cpu"
        assert model.scripted is False and model.refine_generator is not None
    hold.set()
    assert measuring.wait(60)


def test_without_openvino_the_backend_names_the_extra_and_auto_skips_it(
    tiny, tiny_model_dir, monkeypatch
):
    import sys

    from lama_model.accel.optimize import openvino_candidates
    from lama_model.errors import BackendError
    from lama_model.factory import load_for_inference

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    monkeypatch.delenv(AUTO_BACKENDS_ENV)
    with pytest.raises(BackendError, match=r"pip install 'lama-inpaint\[openvino\]'"):
        load_for_inference(tiny_model_dir, torch.device("cpu"), "fp32", backend="openvino")
    assert openvino_candidates(tiny, torch.device("cpu"), compile=False) == []


def test_a_one_shot_auto_runs_torchs_choice_and_says_openvino_was_not_measured(
    tiny, monkeypatch, caplog
):
    """lama-inpaint (no background thread) must not sit for minutes converting and
    calibrating on a first run: it serves torch's choice and says why."""
    from lama_model.accel import optimize as optimize_module

    monkeypatch.delenv(AUTO_BACKENDS_ENV, raising=False)
    assert optimize_module.openvino_candidates(tiny, torch.device("cpu"), False)

    def no_conversion(*_args, **_kwargs):
        raise AssertionError("a one-shot auto converted the model to OpenVINO")

    monkeypatch.setattr(optimize_module, "openvino_model", no_conversion)
    with caplog.at_level("WARNING"):
        chosen = optimize(tiny, "cpu", cache=False)
    assert not chosen.description.startswith("openvino")
    assert optimize_module.ONE_SHOT_NOTE in caplog.text
