"""Defects of the adversarial review (issue 11): each test reproduces one and proves it fixed."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from lama_model import checkpoint
from lama_model.checkpoint import CheckpointError, load_model

# --------------------------------------------------------------------------------------------
# Model files that run code (TorchScript)


class _MaliciousModule(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` writes into a file when it is loaded."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.hits = 0

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image

    @torch.jit.export
    def __getstate__(self) -> list[str]:
        return [self.target]

    @torch.jit.export
    def __setstate__(self, state: list[str]) -> None:
        self.target = state[0]
        self.training = False
        # A shared file mapping: filling it writes the file on disk.
        written = torch.from_file(self.target, True, 16, dtype=torch.uint8).fill_(33)
        self.hits = int(written.sum())


@pytest.fixture
def malicious_archive(tmp_path: Path) -> tuple[Path, Path]:
    """(TorchScript archive, the file its code overwrites when loaded: 16 zero bytes now)."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(bytes(16))
    archive = tmp_path / "evil.pt"
    torch.jit.script(_MaliciousModule(str(victim))).save(str(archive))
    assert victim.read_bytes() == bytes(16)
    return archive, victim


def test_torchscript_is_refused_without_opt_in_and_runs_nothing(malicious_archive):
    archive, victim = malicious_archive
    with pytest.raises(CheckpointError, match="code that runs.*--allow-torchscript"):
        load_model(archive)
    assert victim.read_bytes() == bytes(16)


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_torchscript_behind_a_weights_name_is_refused_even_with_opt_in(malicious_archive, suffix):
    archive, victim = malicious_archive
    disguised = archive.with_suffix(suffix)
    shutil.copy(archive, disguised)
    for allow in (False, True):
        with pytest.raises(CheckpointError, match="TorchScript archive.*code"):
            load_model(disguised, allow_torchscript=allow)
    assert victim.read_bytes() == bytes(16)


def test_torchscript_in_a_model_folder_needs_the_opt_in_too(malicious_archive, tmp_path):
    archive, victim = malicious_archive
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(archive, folder / "model.pt")
    with pytest.raises(CheckpointError, match="--allow-torchscript"):
        load_model(folder)
    assert victim.read_bytes() == bytes(16)


def test_opt_in_loads_torchscript_which_does_run_its_code(malicious_archive):
    """The archive above really is malicious: with the opt-in its code runs."""
    archive, victim = malicious_archive
    load_model(archive, allow_torchscript=True)
    assert victim.read_bytes() == b"!" * 16


def test_pinned_torchscript_release_loads_without_opt_in(golden_dir, monkeypatch):
    from lama_model import weights

    scripted = golden_dir / "tiny-lama.pt"
    md5 = hashlib.md5(scripted.read_bytes()).hexdigest()
    pinned = weights.KnownModel("big-lama-jit", "file:///nowhere", "big-lama.pt", f"md5:{md5}", "")
    monkeypatch.setitem(weights.KNOWN_MODELS, "big-lama-jit", pinned)
    assert load_model(scripted).scripted
    other = weights.KnownModel(
        "big-lama-jit", "file:///nowhere", "big-lama.pt", "md5:" + "0" * 32, ""
    )
    monkeypatch.setitem(weights.KNOWN_MODELS, "big-lama-jit", other)
    with pytest.raises(CheckpointError, match="--allow-torchscript"):
        load_model(scripted)


@pytest.mark.parametrize("command", ["lama-server", "lama-inpaint"])
def test_commands_refuse_torchscript_with_one_line(malicious_archive, tmp_path, capsys, command):
    archive, victim = malicious_archive
    if command == "lama-server":
        from lama_server.cli import main

        argv = ["--model", str(archive), "--device", "cpu", "--token-file", str(tmp_path / "t")]
    else:
        from lama_server.inpaint_cli import main

        image = tmp_path / "i.png"
        from PIL import Image

        Image.new("RGB", (16, 16)).save(image)
        argv = [str(image), str(image), "-o", str(tmp_path / "o.png"), "--model", str(archive),
                "--device", "cpu"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "--allow-torchscript" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert victim.read_bytes() == bytes(16)


# --------------------------------------------------------------------------------------------
# Checkpoints with absurd shapes


def _tiny_plain_state(tiny_model_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(tiny_model_dir / "models/best.ckpt", weights_only=True)
    return {
        k[len("generator.") :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("generator.")
    }


def test_one_dimensional_first_conv_is_a_clear_error(tmp_path, tiny_model_dir):
    state = _tiny_plain_state(tiny_model_dir)
    state["model.1.ffc.convl2l.weight"] = torch.zeros(16)
    torch.save(state, tmp_path / "flat.pth")
    with pytest.raises(CheckpointError, match="4-D"):
        load_model(tmp_path / "flat.pth")


@pytest.mark.parametrize(("ngf", "blocks"), [(100_000, 2), (128, 40)])
def test_huge_shapes_are_refused_before_a_generator_is_built(tmp_path, monkeypatch, ngf, blocks):
    # A 1-element storage viewed as a huge tensor: the file stays tiny, the shapes do not.
    huge = {"model.1.ffc.convl2l.weight": torch.zeros(1).expand(ngf, 4, 7, 7)}
    for block in range(5, 5 + blocks):
        huge[f"model.{block}.conv1.ffc.convl2l.weight"] = torch.zeros(1).expand(8, 8, 3, 3)
    path = tmp_path / "huge.pth"
    torch.save(huge, path)
    assert path.stat().st_size < 16384

    def no_build(*args, **kwargs):
        raise AssertionError("a generator was built from absurd shapes")

    monkeypatch.setattr(checkpoint, "FFCResNetGenerator", no_build)
    with pytest.raises(CheckpointError, match="outside sane limits"):
        load_model(path)
