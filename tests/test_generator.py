"""The generator is the official architecture: same state_dict, same numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lama_model.net.generator import LamaConfig, build_generator
from lama_model.weights.checkpoint import load_model


def _manifest_entries(path):
    manifest = json.loads(path.read_text())
    entries = next(v for v in manifest.values() if isinstance(v, list))
    return manifest, entries


@pytest.mark.parametrize("preset", ["big-lama", "lama-fourier"])
def test_state_dict_matches_official_manifest_key_for_key(golden_dir, preset):
    manifest, entries = _manifest_entries(golden_dir / f"{preset}-manifest.json")
    generator = build_generator(preset)
    ours = [
        (f"generator.{k}", list(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in generator.state_dict().items()
    ]
    theirs = [(e["key"], e["shape"], e["dtype"]) for e in entries]
    assert ours == theirs
    assert sum(p.numel() for p in generator.parameters()) == manifest["parameters"]


def test_config_from_official_kwargs_equals_preset(golden_dir):
    manifest, _ = _manifest_entries(golden_dir / "big-lama-manifest.json")
    assert LamaConfig.from_official(manifest["generator_kwargs"]) == LamaConfig.preset("big-lama")


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown preset 'huge-lama'"):
        LamaConfig.preset("huge-lama")


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_raw_generator_output_matches_official(golden_dir, tiny_model_dir, fused):
    """case-a/raw.npy is the official generator's output on the padded masked input.

    The fused inference rewrite (lama_model.accel.fused) must reproduce it as well as the eager one.
    """
    from PIL import Image

    from lama_model.accel.optimize import fused_model

    model = load_model(tiny_model_dir)
    if fused:
        model = fused_model(model)
    image = np.asarray(Image.open(golden_dir / "case-a/image.png").convert("RGB"), np.float32) / 255
    mask = np.asarray(Image.open(golden_dir / "case-a/mask.png").convert("L"), np.float32) / 255
    h, w = mask.shape
    pad = ((0, -h % 8), (0, -w % 8))
    image = np.pad(image, pad + ((0, 0),), mode="symmetric")
    mask = (np.pad(mask, pad, mode="symmetric") > 0).astype(np.float32)
    with torch.no_grad():
        raw = model(
            torch.from_numpy(image).permute(2, 0, 1)[None], torch.from_numpy(mask)[None, None]
        )
    expected = np.load(golden_dir / "case-a/raw.npy")
    assert raw.shape == expected.shape
    np.testing.assert_allclose(raw.numpy(), expected, atol=1e-5, rtol=0)
