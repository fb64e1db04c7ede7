"""`lama-server install-plugin` / `package-plugin`: files land where the hosts look."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from lama_server import plugin_install
from lama_server.cli import main


def test_install_krita_copies_plugin_client_and_enables_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kritarc").write_text("[General]\nfoo=1\n\n[python]\nenable_other=true\nenable_lama_inpaint=false\n")
    target = plugin_install.install_plugin("krita")
    pykrita = tmp_path / "data" / "krita" / "pykrita"
    assert target == pykrita / "lama_inpaint"
    assert (pykrita / "lama_inpaint.desktop").is_file()
    assert (target / "lama_client.py").read_bytes() == plugin_install.CLIENT_SOURCE.read_bytes()
    assert {"__init__.py", "core.py", "extension.py", "qt_compat.py"} <= {p.name for p in target.iterdir()}
    rc = (tmp_path / "config" / "kritarc").read_text()
    assert "enable_lama_inpaint=true" in rc and "enable_lama_inpaint=false" not in rc
    assert "enable_other=true" in rc and "foo=1" in rc
    plugin_install.install_plugin("krita")  # again: replaces, no duplicates
    assert (tmp_path / "config" / "kritarc").read_text().count("enable_lama_inpaint") == 1


def test_enable_in_a_kritarc_without_python_section(tmp_path):
    rc = tmp_path / "kritarc"
    plugin_install.enable_in_kritarc(rc)
    assert rc.read_text() == "[python]\nenable_lama_inpaint=true\n"


def test_package_krita_zip_has_the_import_layout(tmp_path):
    out = plugin_install.package_plugin("krita", tmp_path / "lama.zip")
    names = set(zipfile.ZipFile(out).namelist())
    assert "lama_inpaint.desktop" in names and "lama_inpaint/__init__.py" in names
    assert "lama_inpaint/lama_client.py" in names
    assert not any("__pycache__" in n for n in names)


def test_install_gimp_makes_the_script_executable(tmp_path):
    target = plugin_install.install_plugin("gimp", tmp_path)
    script = target / "lama_inpaint.py"
    assert script.is_file() and os.access(script, os.X_OK)
    assert (target / "lama_client.py").is_file()


def test_cli_commands(tmp_path, capsys):
    assert main(["install-plugin", "krita", "--dest", str(tmp_path / "k")]) == 0
    assert "Tools › Scripts › Remove object" in capsys.readouterr().out
    assert main(["package-plugin", "krita", "-o", str(tmp_path / "p.zip")]) == 0
    assert (tmp_path / "p.zip").is_file()


def test_bundled_client_runs_without_third_party_packages(tmp_path):
    """The copy a plugin carries works in a Python with no zmq, msgpack or numpy."""
    target = plugin_install.install_plugin("krita", tmp_path)
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('zmq', 'msgpack', 'numpy', 'lama_server', 'lama_model'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        "import lama_client\n"
        "assert lama_client.unpackb(lama_client.packb({'a': [1, b'x']})) == {'a': [1, b'x']}\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == "ok", proc.stderr
