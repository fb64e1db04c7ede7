"""``lama-server install-service``: a systemd user unit that starts *this* lama-server.

The unit names the program that runs now (the ``lama-server`` script, resolved, or this
Python with ``-m``), so it works from a virtualenv as well as from ``~/.local/bin``. A start
that fails on its configuration exits with :data:`~lama_server.commands.exit_codes.CONFIG`
(or ``USAGE``), which the unit tells systemd not to restart: a model missing offline would
otherwise restart every few seconds forever.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from lama_server.commands import exit_codes

UNIT_NAME = "lama-server.service"
MARKER = "# Written by lama-server install-service; it rewrites this file, edit with care."
RESTART_SECONDS = 5
# Five failed starts within five minutes and systemd gives up (its default limit, 5 in 10 s,
# never triggers with a 5 s pause between starts).
START_LIMIT = (300, 5)


def server_command(argv0: str | None = None, executable: str | None = None) -> list[str]:
    """How to start the lama-server that runs now: its script, else ``python -m``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    script = Path(argv0)
    if script.name in ("lama-server", "lama-server.exe") and script.is_file():
        return [str(script.resolve())]
    return [executable or sys.executable, "-m", "lama_server.commands.serve"]


def systemd_quote(arg: str) -> str:
    """One ExecStart word: quoted when it holds spaces or quotes, ``%`` doubled."""
    arg = arg.replace("%", "%%")
    if arg and not any(c in arg for c in ' \t"\'\\'):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_start(command: Sequence[str]) -> str:
    """The ``ExecStart=`` value that runs ``command`` (the program and its server flags)."""
    return " ".join(systemd_quote(word) for word in command)


def unit_text(start: str) -> str:
    """The unit file whose ``ExecStart=`` is ``start`` (see :func:`exec_start`)."""
    interval, burst = START_LIMIT
    prevent = f"{exit_codes.USAGE} {exit_codes.CONFIG}"
    return f"""{MARKER}
# Enable: systemctl --user daemon-reload && systemctl --user enable --now lama-server
[Unit]
Description=LaMa inpainting server for Krita and GIMP
After=default.target
StartLimitIntervalSec={interval}
StartLimitBurst={burst}

[Service]
Type=simple
ExecStart={start}
Restart=on-failure
RestartSec={RESTART_SECONDS}
# Exit {exit_codes.CONFIG} (a model missing offline, not a model, no such device) or \
{exit_codes.USAGE} (bad flags): a restart cannot fix it.
RestartPreventExitStatus={prevent}
# The first start downloads the model; give it time.
TimeoutStartSec=900

[Install]
WantedBy=default.target
"""


def unit_path(env: Mapping[str, str] = os.environ, home: Path | None = None) -> Path:
    """Where systemd looks for the user's own units."""
    config = env.get("XDG_CONFIG_HOME", "")
    base = Path(config) if config and os.path.isabs(config) else (home or Path.home()) / ".config"
    return base / "systemd" / "user" / UNIT_NAME


def write_unit(path: Path, text: str) -> None:
    """Write the unit, replacing only a unit this command wrote before."""
    if path.is_symlink() or (path.exists() and MARKER not in path.read_text(encoding="utf-8")):
        raise ValueError(f"{path} exists and was not written by lama-server install-service; "
                         "move it away or give --dest")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def main(argv: Sequence[str]) -> int:
    """``lama-server install-service [--dest FILE | --print] [-- SERVER FLAGS]``."""
    argv = list(argv)
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(
        prog="lama-server install-service",
        description="Write a systemd user unit that starts this lama-server at log-in.",
        epilog="Server flags go after --, e.g. lama-server install-service -- --model ./big-lama",
    )
    p.add_argument("--dest", type=Path, help=f"unit file (default {unit_path()})")
    p.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    args = p.parse_args(own)
    text = unit_text(exec_start([*server_command(), *flags]))
    if args.print:
        print(text, end="")
        return exit_codes.OK
    path = args.dest or unit_path()
    try:
        write_unit(path, text)
    except (OSError, ValueError) as exc:
        print(f"lama-server install-service: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    print(f"wrote {path}\nstart it now and at each log-in: systemctl --user daemon-reload && "
          f"systemctl --user enable --now {UNIT_NAME.removesuffix('.service')}")  # fmt: skip
    return exit_codes.OK
