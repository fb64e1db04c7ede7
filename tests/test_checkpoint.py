"""Every layout users have loads; every broken file gets a message that says what is wrong."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from lama_model.weights.checkpoint import CheckpointError, load_model


def _probe(model) -> torch.Tensor:
    torch.manual_seed(1)
    image = torch.rand(1, 3, 32, 40)
    mask = (torch.rand(1, 1, 32, 40) > 0.7).float()
    with torch.no_grad():
        out = model(image, mask)
    return mask * out + (1 - mask) * image


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return _probe(load_model(tiny_model_dir))


@pytest.fixture(scope="module")
def tiny_state(tiny_model_dir):
    ckpt = torch.load(tiny_model_dir / "models/best.ckpt", weights_only=True)
    return ckpt["state_dict"]


def test_official_folder_loads_with_config(tiny_model_dir):
    model = load_model(tiny_model_dir)
    assert model.name == "tiny-lama"
    assert model.generator is not None and model.generator.config.ngf == 16
    assert model.generator.config.n_blocks == 2


def test_lightning_ckpt_loads_directly(tiny_model_dir, reference):
    model = load_model(tiny_model_dir / "models/best.ckpt")
    torch.testing.assert_close(_probe(model), reference, atol=0, rtol=0)


def test_ckpt_without_config_infers_architecture(tmp_path, tiny_model_dir, reference):
    lone = tmp_path / "lone.ckpt"
    shutil.copy(tiny_model_dir / "models/best.ckpt", lone)
    torch.testing.assert_close(_probe(load_model(lone)), reference, atol=0, rtol=0)


@pytest.mark.parametrize("prefix", ["", "generator."])
def test_plain_state_dict_loads(tmp_path, tiny_state, reference, prefix):
    plain = {
        prefix + k[len("generator.") :]: v
        for k, v in tiny_state.items()
        if k.startswith("generator.")
    }
    path = tmp_path / "generator.pth"
    torch.save(plain, path)
    torch.testing.assert_close(_probe(load_model(path)), reference, atol=0, rtol=0)


def test_torchscript_file_loads(golden_dir, reference):
    model = load_model(golden_dir / "tiny-lama.pt", allow_torchscript=True)
    assert model.scripted and model.generator is None
    torch.testing.assert_close(_probe(model), reference, atol=1e-5, rtol=0)


def test_full_big_lama_lightning_checkpoint_loads_strictly(tmp_path, golden_dir):
    """Random tensors under the official names, Lightning layout, with non-generator entries."""
    manifest = json.loads((golden_dir / "big-lama-manifest.json").read_text())
    entries = next(v for v in manifest.values() if isinstance(v, list))
    gen = torch.Generator().manual_seed(0)
    state = {}
    for e in entries:
        dtype = getattr(torch, e["dtype"])
        state[e["key"]] = (
            torch.randn(e["shape"], generator=gen).to(dtype)
            if dtype.is_floating_point
            else torch.zeros(e["shape"], dtype=dtype)
        )
    state["discriminator.model0.0.weight"] = torch.zeros(4, 3, 4, 4)
    state["loss_resnet_pl.impl.conv1.weight"] = torch.zeros(2, 2)
    folder = tmp_path / "big-lama"
    (folder / "models").mkdir(parents=True)
    (folder / "config.yaml").write_text(
        "generator:\n"
        + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in manifest["generator_kwargs"].items())
    )
    torch.save(
        {
            "state_dict": state,
            "epoch": 3,
            "pytorch-lightning_version": "1.2.9",
            "optimizer_states": [],
        },
        folder / "models/best.ckpt",
    )
    model = load_model(folder)
    loaded = model.generator.state_dict()
    assert len(loaded) == len(entries)
    key = entries[-2]["key"]
    torch.testing.assert_close(loaded[key.removeprefix("generator.")], state[key])


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder, and not a known model"):
        load_model(tmp_path / "nothing-here")


def test_training_only_download_is_not_offered_as_a_model(monkeypatch):
    """The perceptual-loss encoder is a known download, but not an inpainting model: naming it
    is refused at once, before anything is downloaded."""
    from lama_model.weights import downloads as weights

    def no_download(name, show_progress=True):
        raise AssertionError(f"{name} was downloaded")

    monkeypatch.setattr(weights, "ensure_model", no_download)
    with pytest.raises(CheckpointError, match="is not an inpainting model.*known inpainting "
                       "models: big-lama, big-lama-jit$"):  # fmt: skip
        load_model("ade20k-resnet50dilated")
    assert "ade20k-resnet50dilated" not in weights.known_generators()


def test_empty_file(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_model(tmp_path / "empty.ckpt")


@pytest.mark.parametrize("keep", [2, 10, 30, 10_000, 0.5, -1], ids=lambda k: f"keep-{k}")
def test_a_truncated_checkpoint_says_truncated_or_corrupt_in_one_line(
    tmp_path, tiny_model_dir, keep
):
    """Cut anywhere (10 000 bytes gave "[Errno 22] Invalid argument", most other cuts
    PyTorch's paragraph about its zip reader), alone or inside an official folder."""
    data = (tiny_model_dir / "models/best.ckpt").read_bytes()
    cut = data[: int(len(data) * keep) if isinstance(keep, float) else keep]
    (tmp_path / "cut.ckpt").write_bytes(cut)
    folder = tmp_path / "folder"
    (folder / "models").mkdir(parents=True)
    (folder / "config.yaml").write_bytes((tiny_model_dir / "config.yaml").read_bytes())
    (folder / "models" / "best.ckpt").write_bytes(cut)
    for source, file in ((tmp_path / "cut.ckpt", tmp_path / "cut.ckpt"),
                         (folder, folder / "models" / "best.ckpt")):  # fmt: skip
        with pytest.raises(CheckpointError) as info:
            load_model(source)
        assert str(info.value) == f"truncated or corrupt: {file}"


def test_text_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.ckpt").write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_model(tmp_path / "notes.ckpt")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_arbitrary_objects_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save(
        {"state_dict": {}, "payload": _Payload()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL
    )
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model(path)
    assert "this must never run" not in capsys.readouterr().out


def test_checkpoint_without_generator_keys(tmp_path):
    torch.save({"state_dict": {"discriminator.w": torch.zeros(1)}}, tmp_path / "d.ckpt")
    with pytest.raises(CheckpointError, match="no LaMa generator weights found"):
        load_model(tmp_path / "d.ckpt")


def test_not_a_mapping(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="top level is list"):
        load_model(tmp_path / "list.pth")


def test_wrong_keys_are_named(tmp_path, tiny_model_dir, tiny_state):
    state = dict(tiny_state)
    del state["generator.model.1.bn_l.weight"]
    state["generator.model.99.extra"] = torch.zeros(1)
    folder = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, folder)
    torch.save({"state_dict": state}, folder / "models/best.ckpt")
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    message = str(info.value)
    assert "1 missing keys: model.1.bn_l.weight" in message
    assert "1 unexpected keys: model.99.extra" in message


def test_config_that_does_not_match_weights(tmp_path, tiny_model_dir):
    folder = tmp_path / "mismatch"
    shutil.copytree(tiny_model_dir, folder)
    text = (folder / "config.yaml").read_text().replace("ngf: 16", "ngf: 32")
    (folder / "config.yaml").write_text(text)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_model(folder)


def test_config_without_generator_section(tmp_path, tiny_model_dir):
    folder = tmp_path / "noconf"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.yaml").write_text("run_title: x\n")
    with pytest.raises(CheckpointError, match="no 'generator:' section"):
        load_model(folder)


def test_damaged_torchscript(tmp_path, golden_dir):
    data = (golden_dir / "tiny-lama.pt").read_bytes()
    # Keep the zip directory readable but corrupt the code entries' bytes.
    broken = bytearray(data)
    for i in range(200, min(len(broken), 20000), 7):
        broken[i] ^= 0x5A
    (tmp_path / "bad.pt").write_bytes(bytes(broken))
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "bad.pt", allow_torchscript=True)


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(CheckpointError, match="not a LaMa model folder"):
        load_model(tmp_path)


def test_output_is_deterministic_numpy(tiny_model_dir):
    a = _probe(load_model(tiny_model_dir)).numpy()
    b = _probe(load_model(tiny_model_dir)).numpy()
    assert np.array_equal(a, b)
