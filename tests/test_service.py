"""``lama-server install-service``: a unit that starts this lama-server, and does not restart
forever on a configuration error (issue 26 item 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from lama_server.commands import exit_codes, service


def _exec_start(unit: str) -> str:
    return next(line for line in unit.splitlines() if line.startswith("ExecStart="))


def test_unit_starts_the_lama_server_script_that_wrote_it(tmp_path):
    script = Path(sys.executable).parent / "lama-server"
    if not script.is_file():
        pytest.skip(f"no lama-server script beside {sys.executable} (package not installed)")
    unit = tmp_path / "user" / "lama-server.service"
    proc = subprocess.run([str(script), "install-service", "--dest", str(unit), "--", "--model",
                           "/srv/my models/big-lama"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {unit}" in proc.stdout and "systemctl --user enable --now" in proc.stdout
    text = unit.read_text()
    assert _exec_start(text) == f'ExecStart={script.resolve()} --model "/srv/my models/big-lama"'
    assert "RestartPreventExitStatus=2 78" in text


def test_unit_of_a_server_run_as_a_module_uses_this_python(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lama_server.commands.serve", "install-service", "--print"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _exec_start(proc.stdout) == f"ExecStart={sys.executable} -m lama_server.commands.serve"


def test_a_model_missing_offline_exits_with_the_configuration_code(tmp_path):
    env = dict(os.environ, LAMA_OFFLINE="1", LAMA_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "lama_server.commands.serve", "--device", "cpu", "--token-file",
         str(tmp_path / "token")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == exit_codes.CONFIG == 78, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("lama-server: error: ")


def test_the_unit_in_docs_is_the_one_the_command_writes():
    shipped = (REPO / "docs" / "lama-server.service").read_text(encoding="utf-8")
    assert shipped == service.unit_text("%h/.local/bin/lama-server")


def test_exec_start_quotes_spaces_and_percent_signs():
    words = ["/home/a b/bin/lama-server", "--listen", "ipc:///tmp/100%.sock"]
    assert service.exec_start(words) == (
        '"/home/a b/bin/lama-server" --listen ipc:///tmp/100%%.sock'
    )


def test_a_unit_written_by_someone_else_is_not_replaced(tmp_path, capsys):
    unit = tmp_path / "lama-server.service"
    unit.write_text("[Service]\nExecStart=/opt/custom\n")
    assert service.main(["--dest", str(unit)]) == exit_codes.FAILED
    assert "not written by lama-server install-service" in capsys.readouterr().err
    assert unit.read_text() == "[Service]\nExecStart=/opt/custom\n"
    unit.unlink()
    assert service.main(["--dest", str(unit)]) == exit_codes.OK
    assert service.main(["--dest", str(unit)]) == exit_codes.OK  # its own: rewritten
