"""Shared test fixtures: the golden LaMa fixtures that live beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(
    os.environ.get("LAMA_GOLDEN_DIR", REPO.parent / "shared" / "fixtures" / "lama-golden")
)
# The refinement fixture: beside the golden one, under the same root.
REFINE_FIXTURES = GOLDEN.parent / "lama-refine"


def host_missing(what: str) -> None:
    """A real host (Krita, GIMP) is not installed: skip loudly, or fail if REQUIRE_HOSTS=1."""
    reason = f"REAL-HOST TEST NOT RUN: {what}"
    if os.environ.get("REQUIRE_HOSTS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The official-code golden fixtures (tiny checkpoint, inputs, official outputs)."""
    if not (GOLDEN / "tiny-lama" / "models" / "best.ckpt").is_file():
        pytest.fail(f"golden fixtures not found at {GOLDEN}; set LAMA_GOLDEN_DIR")
    return GOLDEN


@pytest.fixture(scope="session")
def refine_fixtures_dir() -> Path:
    """The official high-resolution refinement run on the tiny model (lama-refine)."""
    if not (REFINE_FIXTURES / "expected_crop.npy").is_file():
        pytest.fail(f"refinement fixtures not found at {REFINE_FIXTURES}; set LAMA_GOLDEN_DIR")
    return REFINE_FIXTURES


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
