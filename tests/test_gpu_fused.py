"""The tensor-core layout of the fused generator (model/gpu_fused.py), checked on CPU.

Channel padding and the one-time dtype cast must not change the function: float32 equals
the reference to rounding, bf16 passes the quality guard. Background compilation must not
block the first call and must take over once ready (the ``eager`` dynamo backend here, so
the test stays fast; the GPU run uses inductor ``max-autotune``).
"""

from __future__ import annotations

import pytest
import torch

from lama_model.accel.gpu_model import GpuFusedModel, hardware_generator, inductor_cache_dir
from lama_model.accel.precision import MIN_PSNR_DB, psnr


def _inputs(h=72, w=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, h, w, generator=gen)
    mask = (torch.rand(1, 1, h, w, generator=gen) > 0.7).float()
    return image, mask


def test_padded_channels_compute_the_same_function_in_float32(tiny_model):
    image, mask = _inputs()
    model = GpuFusedModel(tiny_model, "fp32", bucket=None)
    assert model.net.in_channels % 8 == 0
    head = model.net.fused.stages[0].ffc.l2l.weight
    tail = model.net.fused.stages[-1].conv.weight
    assert head.shape[1] == 8 and tail.shape[0] == 8  # 4 → 8 in, 3 → 8 out
    with torch.inference_mode():
        expected = tiny_model(image, mask)
        got = model(image, mask)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_bf16_weights_are_cast_once_and_pass_the_quality_guard(tiny_model):
    image, mask = _inputs(64, 64, seed=3)
    model = GpuFusedModel(tiny_model, "bf16", bucket=64)
    dtypes = {b.dtype for b in model.net.buffers()}
    assert dtypes == {torch.bfloat16}
    with torch.inference_mode():
        expected = tiny_model(image, mask)
        got = model(image, mask)
    assert got.dtype == torch.float32
    hole = mask.bool().expand_as(got)
    assert psnr(expected[hole], got[hole]) >= MIN_PSNR_DB


def test_bucket_padding_crops_back_to_the_input_size(tiny_model):
    image, mask = _inputs(40, 56)
    with torch.inference_mode():
        out = GpuFusedModel(tiny_model, "fp32", bucket=64)(image, mask)
    assert out.shape == (1, 3, 40, 56)


def test_background_compile_serves_eagerly_then_switches(tiny_model):
    image, mask = _inputs(64, 64)
    model = GpuFusedModel(tiny_model, "fp32", bucket=64, compile=True, compile_backend="eager")
    with torch.inference_mode():
        first = model(image, mask)  # served eagerly while the compiler starts
        assert model.compiler.wait(300)
        assert model.compiler.ready_shapes == 1
        second = model(image, mask)
    torch.testing.assert_close(second, first, atol=1e-6, rtol=0)
    assert "compile" in model.description


def test_inductor_cache_lives_in_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "models"))
    assert inductor_cache_dir() == tmp_path / "inductor"


def test_scripted_models_are_refused(golden_dir):
    from lama_model.weights.checkpoint import load_model

    with pytest.raises(ValueError, match="eager"):
        GpuFusedModel(load_model(golden_dir / "tiny-lama.pt", allow_torchscript=True), "fp32")


def test_hardware_generator_leaves_the_source_untouched(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    hardware_generator(tiny_model.generator, "bf16")
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_path_matches_eager_on_gpu(tiny_model):
    import copy

    image, mask = _inputs(96, 128)
    gpu = copy.deepcopy(tiny_model).to("cuda")
    model = GpuFusedModel(gpu, "bf16", bucket=64)
    assert model.cuda_graphs
    with torch.inference_mode():
        expected = gpu(image.cuda(), mask.cuda())
        got = model(image.cuda(), mask.cuda())
        again = model(image.cuda(), mask.cuda())  # graph replay
    torch.testing.assert_close(again, got, atol=0, rtol=0)
    hole = mask.cuda().bool().expand_as(got)
    assert psnr(expected[hole], got[hole]) >= MIN_PSNR_DB


@pytest.mark.parametrize("channels_last_fft", [True, False])
def test_both_fft_layouts_compute_the_same_function(tiny_model, channels_last_fft):
    image, mask = _inputs(48, 80, seed=5)
    model = GpuFusedModel(tiny_model, "fp32", bucket=None, channels_last_fft=channels_last_fft)
    with torch.inference_mode():
        expected = tiny_model(image, mask)
        got = model(image, mask)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_tap_sum_tail_computes_the_output_convolution(tiny_model):
    image, mask = _inputs(40, 72, seed=9)
    model = GpuFusedModel(tiny_model, "fp32", bucket=None, tail="taps")
    assert "tail-taps" in model.description
    with torch.inference_mode():
        expected = tiny_model(image, mask)
        got = model(image, mask)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    bf16 = GpuFusedModel(tiny_model, "bf16", bucket=None, tail="taps")
    with torch.inference_mode():
        assert psnr(expected, bf16(image, mask)) >= MIN_PSNR_DB
