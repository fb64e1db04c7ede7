"""Shared test fixtures: the LaMa fixtures that live beside the repository.

Every fixture folder is found here and nowhere else:

- ``LAMA_GOLDEN_DIR``: the golden folder (tiny checkpoint, inputs, official outputs), else
  ``lama-golden`` in the fixtures root;
- the fixtures root: ``LAMA_FIXTURES_DIR``, else the folder holding ``LAMA_GOLDEN_DIR``,
  else ``../shared/fixtures`` beside the repository; ``lama-train`` and ``lama-refine`` live
  there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fixtures_root() -> Path:
    """The folder that holds ``lama-golden``, ``lama-train`` and ``lama-refine``."""
    if os.environ.get("LAMA_FIXTURES_DIR"):
        return Path(os.environ["LAMA_FIXTURES_DIR"]).expanduser()
    if os.environ.get("LAMA_GOLDEN_DIR"):
        return Path(os.environ["LAMA_GOLDEN_DIR"]).expanduser().parent
    return REPO.parent / "shared" / "fixtures"


GOLDEN = Path(os.environ.get("LAMA_GOLDEN_DIR") or fixtures_root() / "lama-golden").expanduser()


def _fixture_folder(name: str, marker: str) -> Path:
    folder = GOLDEN if name == "lama-golden" else fixtures_root() / name
    if not (folder / marker).exists():
        hint = "LAMA_GOLDEN_DIR" if name == "lama-golden" else "LAMA_FIXTURES_DIR"
        pytest.fail(f"{name} fixtures not found at {folder}; set {hint}")
    return folder


@pytest.fixture(scope="session", autouse=True)
def private_model_cache(tmp_path_factory):
    """Tests (and the servers they start) keep model and precision caches to themselves."""
    patch = pytest.MonkeyPatch()
    patch.setenv("LAMA_CACHE_DIR", str(tmp_path_factory.mktemp("lama-cache")))
    patch.delenv("LAMA_PRECISION_PROBE", raising=False)
    yield
    patch.undo()


def host_missing(what: str) -> None:
    """A real host (Krita, GIMP) is not installed: skip loudly, or fail if REQUIRE_HOSTS=1."""
    reason = f"REAL-HOST TEST NOT RUN: {what}"
    if os.environ.get("REQUIRE_HOSTS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The official-code golden fixtures (tiny checkpoint, inputs, official outputs)."""
    return _fixture_folder("lama-golden", "tiny-lama/models/best.ckpt")


@pytest.fixture(scope="session")
def train_fixtures_dir() -> Path:
    """The training fixtures (``lama-train``: masks, losses, sources)."""
    return _fixture_folder("lama-train", "README.md")


@pytest.fixture(scope="session")
def refine_fixtures_dir() -> Path:
    """The refinement fixtures (``lama-refine``: image, mask, expected crops)."""
    return _fixture_folder("lama-refine", "README.md")


@pytest.fixture(scope="session")
def tiny_model_dir(golden_dir: Path) -> Path:
    """The tiny checkpoint in the official big-lama folder layout."""
    return golden_dir / "tiny-lama"


class RunningServer:
    """A real ``lama-server`` subprocess on a free loopback port with the tiny model."""

    def __init__(self, proc, endpoint: str, token: str, token_file: Path, log_path: Path) -> None:
        self.proc = proc
        self.endpoint = endpoint
        self.token = token
        self.token_file = token_file
        self.log_path = log_path

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int | None = None, timeout: float = 20) -> int:
        import signal as _signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or _signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except Exception:
            self.proc.kill()
            raise


def start_server(tmp: Path, model: Path, *extra: str, timeout: float = 60) -> RunningServer:
    """Start ``lama-server`` and wait for its ``ready`` line."""
    import re
    import subprocess
    import sys
    import time

    token_file = (
        Path(extra[extra.index("--token-file") + 1]) if "--token-file" in extra else tmp / "token"
    )
    log_path = tmp / "server.log"
    env = dict(os.environ, LAMA_TOKEN_FILE=str(token_file), PYTHONUNBUFFERED="1")
    env.pop("LAMA_TOKEN", None)
    cmd = [sys.executable, "-m", "lama_server.cli", "--model", str(model), "--device", "cpu",
           "--listen", "tcp://127.0.0.1:*", *extra]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        found = re.search(r"ready on (\S+)", text)
        if found:
            token = token_file.read_text().strip()
            return RunningServer(proc, found.group(1), token, token_file, log_path)
        if proc.poll() is not None:
            raise RuntimeError(f"lama-server exited early:\n{text}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"lama-server not ready in {timeout} s:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def running_server(tmp_path_factory, tiny_model_dir):
    """One shared real server for tests that do not stop it."""
    server = start_server(tmp_path_factory.mktemp("server"), tiny_model_dir)
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path, tiny_model_dir):
    """Start private servers (with extra flags) that are stopped after the test."""
    started: list[RunningServer] = []

    def start(*extra: str) -> RunningServer:
        server = start_server(tmp_path / f"s{len(started)}", tiny_model_dir, *extra)
        started.append(server)
        return server

    for d in range(8):
        (tmp_path / f"s{d}").mkdir()
    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


class TinyModelFiles:
    """The tiny model in every format users have, each written on first use:
    ``folder`` (official layout), ``ckpt`` (Lightning, without its config), ``pth``
    (generator ``state_dict``), ``torchscript`` (the official ``to_jit.py`` trace),
    ``onnx`` (our export; needs onnx and onnxscript, so only built when asked for)."""

    def __init__(self, folder: Path, golden: Path, tiny: Path) -> None:
        self.folder, self.golden, self.tiny = folder, golden, tiny
        self.made: dict[str, Path] = {}

    def __getitem__(self, fmt: str) -> Path:
        if fmt not in self.made:
            self.made[fmt] = self._make(fmt)
        return self.made[fmt]

    def _make(self, fmt: str) -> Path:
        import shutil

        import torch

        if fmt == "folder":
            return self.tiny
        if fmt == "torchscript":
            return self.golden / "tiny-lama.pt"
        ckpt = self.tiny / "models" / "best.ckpt"
        if fmt == "ckpt":
            return Path(shutil.copy(ckpt, self.folder / "tiny.ckpt"))
        if fmt == "pth":
            state = torch.load(ckpt, weights_only=True)["state_dict"]
            prefix = "generator."
            plain = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            torch.save(plain, self.folder / "tiny.pth")
            return self.folder / "tiny.pth"
        if fmt == "onnx":
            from lama_model.checkpoint import load_model
            from lama_model.export import export_onnx

            return export_onnx(load_model(self.tiny), self.folder / "tiny.onnx")
        raise KeyError(fmt)


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory, golden_dir, tiny_model_dir) -> TinyModelFiles:
    """The tiny model as a folder, ``.ckpt``, ``.pth``, TorchScript ``.pt`` and ``.onnx``."""
    return TinyModelFiles(tmp_path_factory.mktemp("tiny-formats"), golden_dir, tiny_model_dir)
