"""A real ``lama-server`` subprocess for the benchmarks (bench/ is not a package: the scripts
put this folder on ``sys.path`` and import it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path


def start_server(
    folder: Path,
    model: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> tuple[subprocess.Popen, str, str, Path]:
    """Start ``lama-server --model MODEL`` on a free loopback port with its token and log in
    ``folder`` (plus ``flags``), and wait for its ready line.

    Returns ``(process, endpoint, token, log path)``; RuntimeError with the log if it fails.
    """
    token_file, log_path = folder / "token", folder / "server.log"
    cmd = [sys.executable, "-m", "lama_server.commands.serve", "--model", str(model),
           "--listen", "tcp://127.0.0.1:*", "--token-file", str(token_file), *flags]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"ready on (\S+)", log_path.read_text(errors="replace"))
        if found:
            return proc, found.group(1), token_file.read_text().strip(), log_path
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("lama-server did not start:\n" + log_path.read_text(errors="replace"))
