"""The segmenter's image encoder on OpenVINO, and the choice of its runtime.

The OpenVINO tests run the seeded tiny checkpoint of the golden tests (the real TinyViT
layout at 1024², small widths) and are skipped only where OpenVINO is not installed (CI
installs it with the ``test`` extra); the fall-back tests run everywhere. The encoder runs
float32 on OpenVINO on every CPU (its precision hint is set), so nothing here depends on a
CPU flag.
"""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from lama_model import load_segmenter
from lama_model.accel.optimize import AUTO_BACKENDS_ENV
from lama_model.errors import BackendError
from lama_model.segment import encoder_runtime
from lama_model.segment.encoder_runtime import OPENVINO_MAX_RELATIVE_ERROR, relative_error

ATOL = 1e-4  # the golden tests' tolerance (tests/test_segment_golden.py)
MIN_IOU = 0.98  # a box or point's mask on OpenVINO against the torch encoder's
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(
    not HAS_OPENVINO, reason="OpenVINO not installed: pip install -e '.[openvino]'"
)


def object_image() -> np.ndarray:
    """A synthetic object: a dark disc with a lighter rim on a plain, slightly noisy ground
    (96×128, not square, so the padding and the cropped mask grid both matter)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:96, :128]
    r = np.hypot(y - 50, x - 60)
    image = np.full((96, 128, 3), (200, 190, 170), np.float64) + rng.normal(0, 4, (96, 128, 3))
    image[r < 28] = (60, 80, 120)
    image[(r >= 24) & (r < 28)] = (140, 150, 160)
    return image.clip(0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


PROMPTS = {
    "box": {"box": (30.0, 20.0, 92.0, 80.0)},
    "point": {"points": np.array([[60.0, 50.0]]), "labels": np.array([1])},
}


@needs_openvino
def test_openvino_encoder_gives_the_official_features(tiny_openvino_segmenter, segment_golden):
    """The golden test's image through the OpenVINO encoder: the official features at the
    golden tests' tolerance."""
    assert tiny_openvino_segmenter.description.endswith("encoder on openvino fp32")
    embedding = tiny_openvino_segmenter.embed(segment_golden["image"].numpy())
    torch.testing.assert_close(embedding.features, segment_golden["features"], atol=ATOL, rtol=0)


@needs_openvino
@pytest.mark.parametrize("name", list(PROMPTS))
def test_openvino_masks_match_torch(tiny_openvino_segmenter, tiny_segmenter, segment_golden, name):
    """Box and point masks on the golden image and on a synthetic object: IoU ≥ 0.98 with
    the torch encoder's, and the features within the conversion check's bound."""
    for image in (segment_golden["image"].numpy(), object_image()):
        fast, plain = (s.embed(image) for s in (tiny_openvino_segmenter, tiny_segmenter))
        assert relative_error(fast.features, plain.features) <= OPENVINO_MAX_RELATIVE_ERROR
        masks = [s.predict(e, **PROMPTS[name]) for s, e in
                 ((tiny_openvino_segmenter, fast), (tiny_segmenter, plain))]  # fmt: skip
        assert masks[0].any(), "a prompt that selects nothing proves nothing"
        assert iou(*masks) >= MIN_IOU


@needs_openvino
def test_converted_encoder_is_cached_and_reused(
    tiny_openvino_segmenter, tiny_segmenter_path, monkeypatch
):
    """A second load reads the checked graph from the model cache instead of converting."""

    def no_conversion(*args):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(encoder_runtime, "convert_encoder", no_conversion)
    again = load_segmenter(str(tiny_segmenter_path), "cpu", runtime="openvino")
    assert again.description.endswith("encoder on openvino fp32")


@needs_openvino
def test_graph_cached_by_another_formulation_is_converted_again(
    tiny_openvino_segmenter, tiny_segmenter_path, monkeypatch
):
    """The cached IR's name carries ENCODER_GRAPH: after a change to the encoder's traced
    formulation a load converts the new graph instead of reading the older one."""
    converted = []
    convert = encoder_runtime.convert_encoder

    def counting(*args):
        converted.append(args)
        return convert(*args)

    monkeypatch.setattr(encoder_runtime, "convert_encoder", counting)
    monkeypatch.setattr(encoder_runtime, "ENCODER_GRAPH", encoder_runtime.ENCODER_GRAPH + 1)
    again = load_segmenter(str(tiny_segmenter_path), "cpu", runtime="openvino")
    assert again.description.endswith("encoder on openvino fp32") and len(converted) == 1


@needs_openvino
def test_conversion_that_differs_from_torch_is_refused(tiny_segmenter_path, monkeypatch, tmp_path):
    """A graph that computes something else (here: another encoder's) is not used or cached:
    ``auto`` runs torch and says why; ``openvino`` refuses in one line (converting again:
    nothing was cached)."""
    real_convert = encoder_runtime.convert_encoder

    def other_encoder(encoder, size):
        other = copy.deepcopy(encoder)
        with torch.no_grad():
            other.neck[3].bias.add_(0.5)  # the last layer norm: not normalised away
        return real_convert(other, size)

    monkeypatch.setattr(encoder_runtime, "convert_encoder", other_encoder)
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path))  # not the session's checked graph
    monkeypatch.setenv(AUTO_BACKENDS_ENV, "torch,openvino")
    segmenter = load_segmenter(str(tiny_segmenter_path), "cpu", runtime="auto")
    assert "encoder on torch (OpenVINO's encoder differs from torch's" in segmenter.description
    assert "\n" not in segmenter.description
    with pytest.raises(BackendError, match="differs from torch's") as refused:
        load_segmenter(str(tiny_segmenter_path), "cpu", runtime="openvino")
    assert "\n" not in str(refused.value)
    assert not list(tmp_path.rglob("*.xml"))


@needs_openvino
def test_auto_survives_a_conversion_that_raises(tiny_segmenter_path, monkeypatch, tmp_path):
    """OpenVINO's own exceptions (not ours) during conversion: ``auto`` still serves, with
    torch, the reason in one line."""

    def failing(encoder, size):
        raise TypeError("unsupported operation\nwith a traceback's worth of detail")

    monkeypatch.setattr(encoder_runtime, "convert_encoder", failing)
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(AUTO_BACKENDS_ENV, "torch,openvino")
    segmenter = load_segmenter(str(tiny_segmenter_path), "cpu")
    assert segmenter.description.endswith("encoder on torch (TypeError: unsupported operation)")
    with pytest.raises(BackendError, match="TypeError: unsupported operation$"):
        load_segmenter(str(tiny_segmenter_path), "cpu", runtime="openvino")


def test_auto_runs_torch_without_openvino(tiny_segmenter_path, monkeypatch):
    """Without OpenVINO (the default install) ``auto`` runs torch and says so; asking for
    ``openvino`` is a one-line error naming the extra to install."""

    def not_installed() -> str:
        raise BackendError("the openvino backend needs OpenVINO: pip install ...")

    monkeypatch.setattr(encoder_runtime, "require_openvino", not_installed)
    monkeypatch.setenv(AUTO_BACKENDS_ENV, "torch,openvino")
    segmenter = load_segmenter(str(tiny_segmenter_path), "cpu")
    assert segmenter.description.endswith("encoder on torch (openvino not installed)")
    with pytest.raises(BackendError, match="pip install"):
        load_segmenter(str(tiny_segmenter_path), "cpu", runtime="openvino")


def test_auto_backends_setting_keeps_the_encoder_on_torch(tiny_segmenter_path, monkeypatch):
    """``LAMA_AUTO_BACKENDS=torch`` (the generator's setting) holds for the segmenter too."""

    def must_not_run() -> str:
        raise AssertionError("OpenVINO considered although LAMA_AUTO_BACKENDS=torch")

    monkeypatch.setattr(encoder_runtime, "require_openvino", must_not_run)
    monkeypatch.setenv(AUTO_BACKENDS_ENV, "torch")
    segmenter = load_segmenter(str(tiny_segmenter_path), "cpu")
    assert segmenter.description.endswith("encoder on torch")


def test_unknown_runtime_is_refused(tiny_segmenter_path):
    with pytest.raises(BackendError, match="one of auto, torch, openvino"):
        load_segmenter(str(tiny_segmenter_path), "cpu", runtime="tensorrt")
