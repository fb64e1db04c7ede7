"""The real Krita and GIMP versions the end-to-end tests run in, and how to reach each one.

A host lives either on this machine (Debian 12's Krita 5.1) or in a Debian chroot that a
``tests/hosts/setup_*.sh`` script builds once and marks with a stamp. Paths handed to the host
are paths *inside* its root; :meth:`RealHost.outside` maps them to this machine's view.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

STAMP = ".lama-host-ready"


@dataclass(frozen=True)
class RealHost:
    """One host version: ``app`` (krita/gimp) ``series`` (e.g. ``3.2``) found in ``root``."""

    app: str
    series: str
    root: Path | None  # a chroot, or None: installed on this machine
    setup: str  # the script that provides it

    @property
    def id(self) -> str:
        return f"{self.app}-{self.series}"

    def missing(self) -> str | None:
        """Why this host cannot run here, or None."""
        if self.root is None:
            tools = [t for t in (self.app, "xvfb-run") if shutil.which(t) is None]
            return f"{', '.join(tools)} not installed (bash {self.setup})" if tools else None
        if os.geteuid() != 0:
            return f"{self.id} runs in a chroot, which needs root"
        if not (self.root / STAMP).is_file():
            return f"no {self.id} chroot at {self.root} (bash {self.setup}, as root)"
        return None

    def outside(self, inside: str) -> Path:
        """This machine's path for ``inside`` (a path as the host sees it)."""
        return Path(inside) if self.root is None else self.root / inside.lstrip("/")

    def fresh_dir(self, inside: str) -> Path:
        """An empty folder at ``inside``; returns this machine's path of it."""
        path = self.outside(inside)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def run(
        self, argv: list[str], env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` in the host's system with exactly ``env`` (plus a plain PATH and locale)."""
        base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        if self.root is not None:
            base["XDG_RUNTIME_DIR"] = "/tmp"
        full = [f"{k}={v}" for k, v in {**base, **env}.items()]
        prefix = ["chroot", str(self.root)] if self.root is not None else []
        cmd = ["timeout", "-k", "5", str(int(timeout)), *prefix, "/usr/bin/env", "-i", *full, *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 20)

    def install_plugin(self, home_inside: str, *extra: str) -> str:
        """``lama-server install-plugin APP`` as this host's user runs it: HOME is the host's
        user home, nothing else set; returns what it printed."""
        env = {
            "HOME": str(self.outside(home_inside)),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        cmd = [sys.executable, "-m", "lama_server.commands.serve", "install-plugin", self.app, *extra]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


def free_display() -> int:
    """An X display number no X server uses, seen from this machine.

    ``xvfb-run -a`` inside a chroot only sees the chroot's /tmp lock files, while X sockets
    (abstract unix sockets) are shared with every other process here: pick from outside."""
    try:
        sockets = Path("/proc/net/unix").read_text()
    except OSError:
        sockets = ""
    for n in range(100, 1000):
        if not Path(f"/tmp/.X{n}-lock").exists() and f"/tmp/.X11-unix/X{n}\n" not in sockets:
            return n
    raise RuntimeError("no free X display number")


def _chroot(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or default)


SID = _chroot("LAMA_SID_CHROOT", "/var/tmp/lama-hosts-sid")
EXPERIMENTAL = _chroot("LAMA_EXPERIMENTAL_CHROOT", "/var/tmp/lama-hosts-experimental")
TRIXIE = _chroot("GIMP_CHROOT", "/var/tmp/lama-gimp3-trixie")

KRITA_HOSTS = [
    RealHost("krita", "5.1", None, "tests/hosts/setup_krita.sh"),  # Debian 12, this machine
    RealHost("krita", "5.3", SID, "tests/hosts/setup_sid.sh"),
    RealHost("krita", "6.0", EXPERIMENTAL, "tests/hosts/setup_experimental.sh"),  # Qt6, PyQt6
]
GIMP_HOSTS = [
    RealHost("gimp", "3.0", TRIXIE, "tests/hosts/setup_gimp.sh"),
    RealHost("gimp", "3.2", SID, "tests/hosts/setup_sid.sh"),
]
