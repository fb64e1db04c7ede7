"""Selecting an object: the tiny segmenter serves the contract, and bad prompts, bad files
and no network each give one line."""

from __future__ import annotations

import numpy as np
import pytest

from lama_model import load_segmenter
from lama_model.errors import CheckpointError, PromptError, WeightsError
from lama_model.interface import ServedSegmenter
from lama_model.segment import MAX_POINTS
from lama_model.weights import downloads


@pytest.fixture(scope="module")
def embedding(tiny_segmenter):
    return tiny_segmenter.embed(np.full((40, 60, 3), 200, np.uint8))


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(PromptError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_tiny_segmenter_serves_the_contract(tiny_segmenter, embedding):
    assert isinstance(tiny_segmenter, ServedSegmenter)
    assert tiny_segmenter.device.type == "cpu" and "mobile-sam" in tiny_segmenter.description
    mask = tiny_segmenter.predict(embedding, box=(5, 5, 30, 30))
    assert mask.dtype == bool and mask.shape == (40, 60)


@pytest.mark.parametrize(
    ("box", "words"),
    [
        ((10, 10, 10, 30), "empty box"),
        ((30, 10, 20, 30), "empty box"),
        ((60, 0, 80, 20), "outside the 60x40 image"),
        ((-20, -20, 0, 0), "outside"),
        ((1, 2, 3), "4 finite numbers"),
        ((0, 0, float("nan"), 5), "4 finite numbers"),
    ],
)
def test_bad_box_is_one_line(tiny_segmenter, embedding, box, words):
    assert words in one_line_error(tiny_segmenter.predict, embedding, box=box)


def test_no_prompt_is_one_line(tiny_segmenter, embedding):
    assert "no prompt" in one_line_error(tiny_segmenter.predict, embedding)


def test_too_many_points_is_one_line(tiny_segmenter, embedding):
    points = np.full((MAX_POINTS + 1, 2), 5.0)
    labels = np.ones(MAX_POINTS + 1, int)
    message = one_line_error(tiny_segmenter.predict, embedding, points=points, labels=labels)
    assert f"at most {MAX_POINTS}" in message
    # the limit itself is accepted
    tiny_segmenter.predict(embedding, points=points[:MAX_POINTS], labels=labels[:MAX_POINTS])


@pytest.mark.parametrize(
    ("points", "labels", "words"),
    [
        ([[5.0, 5.0]], [2], "labels must be 1 (object) or 0"),
        ([[5.0, 5.0]], [-1], "labels must be 1 (object) or 0"),
        ([[5.0, 5.0]], None, "points need labels"),
        ([[5.0, 5.0], [6.0, 6.0]], [1], "2 points but labels"),
        ([[70.0, 5.0]], [1], "outside the 60x40 image"),
        ([5.0, 5.0], [1], "(N, 2)"),
    ],
)
def test_bad_points_are_one_line(tiny_segmenter, embedding, points, labels, words):
    pts = np.array(points)
    marks = None if labels is None else np.array(labels)
    message = one_line_error(tiny_segmenter.predict, embedding, points=pts, labels=marks)
    assert words in message


def test_image_that_is_not_rgb_uint8_is_one_line(tiny_segmenter):
    one_line_error(tiny_segmenter.embed, np.zeros((10, 10), np.uint8))
    one_line_error(tiny_segmenter.embed, np.zeros((10, 10, 3), np.float32))


def test_box_and_points_together_are_accepted(tiny_segmenter, embedding):
    mask = tiny_segmenter.predict(
        embedding, box=(5, 5, 50, 35), points=np.array([[20.0, 20.0]]), labels=np.array([0])
    )
    assert mask.shape == (40, 60)


def test_offline_download_is_one_line_weights_error(tmp_path, monkeypatch):
    """No network in tests: the known entry is pointed at a closed loopback port."""
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LAMA_OFFLINE", raising=False)
    entry = downloads.KNOWN_MODELS["mobile-sam"]
    unreachable = downloads.KnownModel(
        **{**entry.__dict__, "url": "http://127.0.0.1:9/mobile_sam.pt"}
    )
    monkeypatch.setitem(downloads.KNOWN_MODELS, "mobile-sam", unreachable)
    with pytest.raises(WeightsError) as info:
        load_segmenter("mobile-sam", "cpu")
    assert "mobile_sam.pt" in str(info.value) and "--segment-model" in str(info.value)


def test_offline_flag_is_one_line_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LAMA_OFFLINE", "1")
    with pytest.raises(WeightsError, match="LAMA_OFFLINE=1"):
        load_segmenter("mobile-sam", "cpu")


def test_release_weights_are_pinned():
    entry = downloads.KNOWN_MODELS["mobile-sam"]
    assert entry.kind == "segmenter" and entry.digest == "md5:f3c0d8cda613564d499310dab6c812cd"
    assert "mobile-sam" not in downloads.known_generators()  # never offered as an inpainter


def test_missing_or_foreign_file_is_checkpoint_error(tmp_path, tiny_segmenter_path):
    with pytest.raises(CheckpointError, match="no such segmenter file"):
        load_segmenter(str(tmp_path / "nothing.pt"), "cpu")
    import torch

    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a mobile-sam checkpoint") as info:
        load_segmenter(str(foreign), "cpu")
    assert "\n" not in str(info.value)


def test_unreadable_configuration_beside_a_file_is_checkpoint_error(tmp_path, tiny_segmenter_path):
    copy = tmp_path / "tiny.pt"
    copy.write_bytes(tiny_segmenter_path.read_bytes())
    (tmp_path / "tiny.pt.json").write_text('{"embed_dims": [8, 16], "no_such_field": 1}')
    with pytest.raises(CheckpointError, match="not a segmenter configuration"):
        load_segmenter(str(copy), "cpu")
