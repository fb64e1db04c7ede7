"""Every network lama-train downloads is pinned (SHA-256, https); a mismatch is one line and
the file is not used. No network: file:// URLs only."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest

from lama_model.weights import downloads as weights
from lama_model.weights.downloads import WeightsError, ensure_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LAMA_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_evaluation_and_training_networks_are_pinned_by_sha256_over_https():
    entries = [e for e in weights.KNOWN_MODELS.values() if e.kind in ("evaluation", "training")]
    assert {e.name for e in entries} == {
        "lpips-vgg16", "lpips-vgg-lin", "fid-inception", "ade20k-resnet50dilated"
    }
    for entry in entries:
        assert entry.url.startswith("https://"), entry.name
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", entry.digest or ""), entry.name


def test_an_evaluation_network_with_a_wrong_checksum_is_one_line_and_not_installed(
    tmp_path, cache, monkeypatch
):
    fake = tmp_path / "pt_inception.pth"
    fake.write_bytes(b"not the inception weights")
    entry = weights.KNOWN_MODELS["fid-inception"]
    monkeypatch.setitem(weights.KNOWN_MODELS, entry.name, dataclasses.replace(entry, url=fake.as_uri()))
    with pytest.raises(WeightsError, match="checksum mismatch") as caught:
        ensure_model(entry.name, show_progress=False)
    assert "\n" not in str(caught.value)
    assert not (cache / entry.filename).exists()


def test_a_cached_evaluation_network_that_was_altered_is_refused(cache):
    entry = weights.KNOWN_MODELS["lpips-vgg-lin"]
    cache.mkdir(parents=True)
    (cache / entry.filename).write_bytes(b"altered")
    with pytest.raises(WeightsError, match="checksum mismatch"):
        ensure_model(entry.name, show_progress=False)


def test_a_perceptual_encoder_that_is_not_the_pinned_file_is_refused_and_not_installed(
    tmp_path, cache, monkeypatch
):
    """The ResNetPL encoder's SHA-256 is pinned: another file (a corrupt download, a
    substituted mirror) is one line and never reaches the cache or torch.load."""
    source = tmp_path / "encoder_epoch_20.pth"
    source.write_bytes(b"encoder" * 100)
    entry = weights.KNOWN_MODELS["ade20k-resnet50dilated"]
    monkeypatch.setitem(weights.KNOWN_MODELS, entry.name, dataclasses.replace(entry, url=source.as_uri()))
    with pytest.raises(WeightsError, match="checksum mismatch") as caught:
        ensure_model(entry.name, show_progress=False)
    assert "\n" not in str(caught.value)
    assert not (cache / entry.filename).exists()


def test_a_cached_perceptual_encoder_altered_after_download_is_refused(
    tmp_path, cache, monkeypatch
):
    source = tmp_path / "encoder_epoch_20.pth"
    source.write_bytes(b"encoder" * 100)
    pinned = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    entry = dataclasses.replace(
        weights.KNOWN_MODELS["ade20k-resnet50dilated"], url=source.as_uri(), digest=pinned
    )
    monkeypatch.setitem(weights.KNOWN_MODELS, entry.name, entry)
    cached = ensure_model(entry.name, show_progress=False)
    assert ensure_model(entry.name, show_progress=False) == cached
    cached.write_bytes(b"swapped")
    with pytest.raises(WeightsError, match="checksum mismatch") as caught:
        ensure_model(entry.name, show_progress=False)
    assert "\n" not in str(caught.value)
