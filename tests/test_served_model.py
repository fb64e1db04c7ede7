"""Every model the factory can serve keeps the written contract (``lama_model.interface``).

The pipeline and the daemon read these attributes directly instead of probing for them, so a
served model that lacks one would fail only on the request path that reads it.
"""

from __future__ import annotations

import pytest
import torch

from lama_model.choices import PRECISIONS
from lama_model.factory import load_for_inference
from lama_model.interface import PrecisionChoice, ServedModel
from lama_model.weights.checkpoint import load_model

CPU = torch.device("cpu")


def _assert_keeps_the_contract(model: object) -> None:
    assert isinstance(model, ServedModel)
    assert isinstance(model.name, str) and model.name
    assert isinstance(model.size_multiple, int) and model.size_multiple >= 1
    assert isinstance(model.scripted, bool)
    assert model.choice is None or isinstance(model.choice, PrecisionChoice)
    assert model.device.type == "cpu" and model.input_device.type == "cpu"
    assert model.precision in PRECISIONS and model.precision != "auto"
    assert isinstance(model.description, str) and model.description
    assert model.refine_generator is None or isinstance(model.refine_generator, torch.nn.Module)
    side = 2 * model.size_multiple * 4
    image, mask = torch.rand(1, 3, side, side), torch.zeros(1, 1, side, side)
    mask[..., 8:24, 8:24] = 1
    with torch.no_grad():
        out = model(image, mask)
    assert out.shape == image.shape and out.dtype == torch.float32


@pytest.mark.parametrize(
    ("backend", "precision"),
    [("torch", "fp32"), ("torch", "auto"), ("onnxruntime", "fp32")],
)
def test_the_factory_serves_models_that_keep_the_contract(tiny_model_dir, tmp_path, monkeypatch, backend, precision):
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path))  # the ONNX export lands in the cache
    model = load_for_inference(str(tiny_model_dir), CPU, precision, backend=backend)
    _assert_keeps_the_contract(model)
    if backend == "torch":
        assert model.refine_generator is not None  # refinement needs the eager generator
    else:
        assert model.refine_generator is None  # no backward pass through a session


@pytest.mark.parametrize("source", ["tiny-lama", "tiny-lama.pt"])
def test_loaded_checkpoints_keep_the_contract(golden_dir, source):
    model = load_model(golden_dir / source, allow_torchscript=True)
    _assert_keeps_the_contract(model)
    assert model.scripted == source.endswith(".pt")


def test_a_device_sharing_worker_model_keeps_the_contract_and_holds_the_lock(tiny_model_dir):
    """Workers sharing a GPU wrap their model in SerializedModel: it must answer every member
    of the contract as the wrapped model does, and its forward must wait for the shared lock."""
    import threading

    from lama_server.daemon.worker import SerializedModel

    model = load_for_inference(str(tiny_model_dir), CPU, "fp32")
    lock = threading.Lock()
    shared = SerializedModel(model, lock)
    _assert_keeps_the_contract(shared)
    for member in ("name", "size_multiple", "scripted", "choice", "compiler", "device",
                   "input_device", "precision", "description", "refine_generator"):  # fmt: skip
        assert getattr(shared, member) == getattr(model, member), member
    image, mask = torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32)
    finished = threading.Event()

    def forward() -> None:
        with torch.no_grad():
            shared(image, mask)
        finished.set()

    with lock:  # another worker's forward holds the device
        thread = threading.Thread(target=forward)
        thread.start()
        assert not finished.wait(0.5)
    assert finished.wait(30)
    thread.join()
