"""Known-model downloads: verified, cached, and a clear message offline. No network here:
downloads are served from file:// URLs and an unreachable loopback port."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from lama_model.weights import downloads as weights
from lama_model.weights.downloads import KnownModel, WeightsError, ensure_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LAMA_OFFLINE", raising=False)
    return tmp_path / "cache"


def _register(monkeypatch, entry):
    monkeypatch.setitem(weights.KNOWN_MODELS, entry.name, entry)


def test_download_verifies_checksum_and_caches(tmp_path, cache, monkeypatch):
    payload = tmp_path / "remote.pt"
    payload.write_bytes(b"weights" * 1000)
    md5 = hashlib.md5(payload.read_bytes()).hexdigest()
    _register(monkeypatch, KnownModel("m", payload.as_uri(), "m.pt", f"md5:{md5}", "7 kB"))
    path = ensure_model("m", show_progress=False)
    assert path == cache / "m.pt" and path.read_bytes() == payload.read_bytes()
    payload.unlink()  # second use comes from the cache
    assert ensure_model("m", show_progress=False) == path


def test_checksum_mismatch_installs_nothing(tmp_path, cache, monkeypatch):
    payload = tmp_path / "remote.pt"
    payload.write_bytes(b"tampered")
    _register(monkeypatch, KnownModel("m", payload.as_uri(), "m.pt", "md5:" + "0" * 32, "1 kB"))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        ensure_model("m", show_progress=False)
    assert not (cache / "m.pt").exists()


def test_zipped_model_folder_is_unpacked(tmp_path, cache, monkeypatch, tiny_model_dir):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(tiny_model_dir / "config.yaml", "big/config.yaml")
        zf.write(tiny_model_dir / "models/best.ckpt", "big/models/best.ckpt")
    archive = tmp_path / "big.zip"
    archive.write_bytes(buf.getvalue())
    _register(monkeypatch, KnownModel("big", archive.as_uri(), "big.zip", None, "2 MB", "big"))
    folder = ensure_model("big", show_progress=False)
    assert (folder / "models/best.ckpt").is_file()
    assert (folder / ".source-sha256").read_text().strip() == hashlib.sha256(
        buf.getvalue()
    ).hexdigest()

    from lama_model.weights.checkpoint import load_model

    monkeypatch.chdir(tmp_path)
    assert load_model("big").generator is not None  # a known name resolves through the cache


def test_unreachable_server_fails_fast_with_instructions(cache, monkeypatch):
    _register(
        monkeypatch, KnownModel("m", "http://127.0.0.1:9/big-lama.pt", "m.pt", None, "200 MB")
    )
    with pytest.raises(WeightsError) as info:
        ensure_model("m", show_progress=False)
    message = str(info.value)
    assert "http://127.0.0.1:9/big-lama.pt" in message and str(cache / "m.pt") in message


def test_offline_flag_never_touches_the_network(cache, monkeypatch):
    monkeypatch.setenv("LAMA_OFFLINE", "1")
    monkeypatch.setattr(weights, "_download", lambda *a: pytest.fail("network used"))
    with pytest.raises(WeightsError, match="LAMA_OFFLINE=1") as info:
        ensure_model("big-lama")
    assert "config.yaml exists" in str(info.value)


def test_registry_has_the_official_models():
    assert weights.KNOWN_MODELS["big-lama"].url.endswith("big-lama.zip")
    jit = weights.KNOWN_MODELS["big-lama-jit"]
    assert jit.digest == "md5:e3aa4aaa15225a33ec84f9f4bc47e500"


def test_unknown_name():
    with pytest.raises(WeightsError, match="unknown model"):
        ensure_model("no-such-model")
