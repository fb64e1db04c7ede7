"""`lama-server install-plugin` / `package-plugin`: files land where the hosts look."""

from __future__ import annotations

import ast
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lama_server.commands import plugins as plugin_install
from lama_server.commands.serve import main


def test_install_krita_copies_plugin_client_and_enables_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kritarc").write_text(
        "[General]\nfoo=1\n\n[python]\nenable_other=true\nenable_lama_inpaint=false\n"
    )
    [done] = plugin_install.install_plugin("krita")
    target = done.path
    pykrita = tmp_path / "data" / "krita" / "pykrita"
    assert target == pykrita / "lama_inpaint"
    assert (pykrita / "lama_inpaint.desktop").is_file()
    assert _client_files(target / "lama_client") == _client_files(plugin_install.CLIENT_SOURCE)
    assert {"__init__.py", "core.py", "extension.py", "qt_compat.py"} <= {
        p.name for p in target.iterdir()
    }
    rc = (tmp_path / "config" / "kritarc").read_text()
    assert "enable_lama_inpaint=true" in rc and "enable_lama_inpaint=false" not in rc
    assert "enable_other=true" in rc and "foo=1" in rc
    plugin_install.install_plugin("krita")  # again: replaces, no duplicates
    assert (tmp_path / "config" / "kritarc").read_text().count("enable_lama_inpaint") == 1


def _client_files(folder: Path) -> dict[str, bytes]:
    """The client package's source files by name (caches left out)."""
    return {p.name: p.read_bytes() for p in folder.glob("*.py")}


def test_enable_in_a_kritarc_without_python_section(tmp_path):
    rc = tmp_path / "kritarc"
    plugin_install.enable_in_kritarc(rc)
    assert rc.read_text() == "[python]\nenable_lama_inpaint=true\n"


def test_package_krita_zip_has_the_import_layout(tmp_path):
    out = plugin_install.package_plugin("krita", tmp_path / "lama.zip")
    names = set(zipfile.ZipFile(out).namelist())
    assert "lama_inpaint.desktop" in names and "lama_inpaint/__init__.py" in names
    assert "lama_inpaint/lama_client/__init__.py" in names
    assert not any("__pycache__" in n for n in names)


def _krita_message_titles() -> set[str]:
    """The title of every message box the Krita plugin can show."""
    titles = set()
    # The plug-in's own messages, and the server errors explained by the bundled client.
    sources = [*(plugin_install.plugin_source("krita") / "lama_inpaint").glob("*.py"),
               plugin_install.CLIENT_SOURCE / "host_kit.py"]  # fmt: skip
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and node.args:
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                first = node.args[0]
                if name in ("PluginError", "_message", "Explanation") and isinstance(
                    first, ast.Constant
                ):
                    titles.add(first.value)
    return titles


def test_the_krita_manual_the_desktop_file_names_is_installed_and_explains_every_message(tmp_path):
    [done] = plugin_install.install_plugin("krita", tmp_path)
    desktop = (tmp_path / "lama_inpaint.desktop").read_text(encoding="utf-8")
    manual_name = next(
        line.split("=", 1)[1] for line in desktop.splitlines() if line.startswith("X-Krita-Manual=")
    )
    manual = (done.path / manual_name).read_text(encoding="utf-8")
    titles = _krita_message_titles()
    assert len(titles) >= 10
    assert [t for t in sorted(titles) if f"<dt>{t}</dt>" not in manual] == []
    for topic in ("lama-server", "install-service", "Server endpoint", "Feather", "Refine",
                  "Processing size"):
        assert topic in manual
    zipped = zipfile.ZipFile(plugin_install.package_plugin("krita", tmp_path / "k.zip"))
    assert f"lama_inpaint/{manual_name}" in zipped.namelist()


def test_install_gimp_makes_the_script_executable(tmp_path):
    [done] = plugin_install.install_plugin("gimp", tmp_path)
    target = done.path
    script = target / "lama_inpaint.py"
    assert script.is_file() and os.access(script, os.X_OK)
    assert (target / "lama_client" / "__init__.py").is_file()


def test_cli_commands(tmp_path, capsys):
    assert main(["install-plugin", "krita", "--dest", str(tmp_path / "k")]) == 0
    assert "Tools › Scripts › Remove object" in capsys.readouterr().out
    assert main(["package-plugin", "krita", "-o", str(tmp_path / "p.zip")]) == 0
    assert (tmp_path / "p.zip").is_file()


def test_bundled_client_runs_without_third_party_packages(tmp_path):
    """The copy a plugin carries works in a Python with no zmq, msgpack or numpy."""
    target = plugin_install.install_plugin("krita", tmp_path)[0].path
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


# -- finding the hosts ---------------------------------------------------------------------


@pytest.fixture
def user_home(tmp_path, monkeypatch):
    """A fresh user: HOME in tmp, no XDG variables, no GIMP or Krita on PATH."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "GIMP3_DIRECTORY", "LAMA_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(plugin_install.sys, "platform", "linux")
    return home


def _gimp_plugins(home, series, build=""):
    base = {
        "": home / ".config",
        "flatpak": home / ".var/app/org.gimp.GIMP/config",
        "snap": home / "snap/gimp/current/.config",
    }[build]
    return base / "GIMP" / series / "plug-ins"


def test_gimp_goes_into_every_gimp_3_series_the_user_has_including_flatpak_and_snap(user_home):
    for series, build in [("3.0", ""), ("3.2", ""), ("3.2", "flatpak"), ("3.0", "snap")]:
        _gimp_plugins(user_home, series, build).parent.mkdir(parents=True)
    (user_home / ".config" / "GIMP" / "2.10").mkdir()  # GIMP 2 cannot run the plug-in
    done = plugin_install.install_plugin("gimp")
    assert [(d.label, d.path) for d in done] == [
        ("GIMP 3.0", _gimp_plugins(user_home, "3.0") / "lama_inpaint"),
        ("GIMP 3.2", _gimp_plugins(user_home, "3.2") / "lama_inpaint"),
        ("GIMP 3.2 (Flatpak)", _gimp_plugins(user_home, "3.2", "flatpak") / "lama_inpaint"),
        ("GIMP 3.0 (Snap)", _gimp_plugins(user_home, "3.0", "snap") / "lama_inpaint"),
    ]
    assert all(os.access(d.path / "lama_inpaint.py", os.X_OK) for d in done)
    token = (user_home / ".config" / "lama-inpaint" / "token").read_text()
    for sandbox in (
        user_home / ".var/app/org.gimp.GIMP/config",
        user_home / "snap/gimp/current/.config",
    ):
        assert (sandbox / "lama-inpaint" / "token").read_text() == token
    assert not (user_home / ".config" / "GIMP" / "2.10" / "plug-ins").exists()


def test_gimp_version_flag_picks_one_series(user_home):
    for series in ("3.0", "3.2"):
        _gimp_plugins(user_home, series).parent.mkdir(parents=True)
    [done] = plugin_install.install_plugin("gimp", gimp_version="3.2")
    assert done.path == _gimp_plugins(user_home, "3.2") / "lama_inpaint"
    assert not (_gimp_plugins(user_home, "3.0") / "lama_inpaint").exists()
    with pytest.raises(plugin_install.InstallError, match="3.0 or 3.2"):
        plugin_install.install_plugin("gimp", gimp_version="2.10")


def test_gimp_version_flag_creates_a_series_only_where_gimp_has_nothing_to_import(user_home):
    """GIMP imports an older series' settings only on a first start that finds no folder."""
    [done] = plugin_install.install_plugin("gimp", gimp_version="3.2")  # a fresh user: no loss
    assert done.path == _gimp_plugins(user_home, "3.2") / "lama_inpaint"
    shutil.rmtree(user_home / ".config" / "GIMP")
    for older in ("3.0", "2.10"):
        (user_home / ".config" / "GIMP" / older).mkdir(parents=True)
        with pytest.raises(plugin_install.InstallError, match=f"importing your GIMP {older}"):
            plugin_install.install_plugin("gimp", gimp_version="3.2")
        assert not (user_home / ".config" / "GIMP" / "3.2").exists()
        shutil.rmtree(user_home / ".config" / "GIMP")
    (user_home / ".config" / "GIMP" / "3.2").mkdir(parents=True)  # newer: nothing to import
    [done] = plugin_install.install_plugin("gimp", gimp_version="3.0")
    assert done.path == _gimp_plugins(user_home, "3.0") / "lama_inpaint"


@pytest.mark.parametrize("before", ["no GIMP folder", "GIMP 2.10 only", "GIMP 3.0 on PATH"])
def test_without_a_gimp_3_folder_nothing_is_created_and_the_user_is_told_to_start_gimp(
    user_home, tmp_path, capsys, before
):
    if before == "GIMP 2.10 only":
        (user_home / ".config" / "GIMP" / "2.10").mkdir(parents=True)
    if before == "GIMP 3.0 on PATH":
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "gimp-console-3.0").touch()
    folders = sorted(p for p in user_home.rglob("*"))
    assert main(["install-plugin", "gimp"]) == 1
    err = capsys.readouterr().err
    assert "start GIMP once" in err and err.count("\n") == 1
    assert sorted(p for p in user_home.rglob("*") if "lama-inpaint" not in p.parts) == folders


@pytest.mark.parametrize("value", ["", "relative/dir"])
def test_empty_or_relative_xdg_variables_count_as_unset(user_home, monkeypatch, tmp_path, value):
    monkeypatch.setenv("XDG_CONFIG_HOME", value)
    monkeypatch.setenv("XDG_DATA_HOME", value)
    monkeypatch.chdir(tmp_path)
    [gimp] = plugin_install.install_plugin("gimp", gimp_version="3.2")
    [krita] = plugin_install.install_plugin("krita")
    assert gimp.path == _gimp_plugins(user_home, "3.2") / "lama_inpaint"
    assert krita.path == user_home / ".local/share/krita/pykrita/lama_inpaint"
    assert "enable_lama_inpaint=true" in (user_home / ".config" / "kritarc").read_text()
    assert not (tmp_path / "GIMP").exists() and not (tmp_path / "relative").exists()


def test_gimp3_directory_overrides_the_per_series_folders(user_home, monkeypatch, tmp_path):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "portable"))
    [done] = plugin_install.install_plugin("gimp")
    assert done.path == tmp_path / "portable" / "plug-ins" / "lama_inpaint"


def test_krita_flatpak_profile_gets_the_plugin_and_its_own_kritarc(user_home):
    app = user_home / ".var" / "app" / "org.kde.krita"
    app.mkdir(parents=True)
    [done] = plugin_install.install_plugin("krita")  # no native Krita profile: Flatpak only
    assert done.label == "Krita (Flatpak)"
    assert done.path == app / "data" / "krita" / "pykrita" / "lama_inpaint"
    assert (app / "data" / "krita" / "pykrita" / "lama_inpaint.desktop").is_file()
    assert "enable_lama_inpaint=true" in (app / "config" / "kritarc").read_text()
    # Inside the sandbox XDG_CONFIG_HOME is APP/config: the plugin reads the token there.
    shared = app / "config" / "lama-inpaint" / "token"
    server_token = (user_home / ".config" / "lama-inpaint" / "token").read_text()
    assert shared.read_text() == server_token and stat.S_IMODE(shared.stat().st_mode) == 0o600
    (user_home / ".local" / "share" / "krita").mkdir(parents=True)  # the AppImage/distro Krita ran
    labels = [d.label for d in plugin_install.install_plugin("krita")]
    assert labels == ["Krita", "Krita (Flatpak)"]
    assert "enable_lama_inpaint=true" in (user_home / ".config" / "kritarc").read_text()


def test_windows_and_macos_folders(tmp_path):
    env = {
        "APPDATA": str(tmp_path / "Roaming"),
        "LOCALAPPDATA": str(tmp_path / "Local"),
        "PATH": "",
    }
    [gimp] = plugin_install.gimp_destinations("3.2", "win32", env, tmp_path)
    assert gimp.folder == tmp_path / "Roaming" / "GIMP" / "3.2" / "plug-ins"
    [krita] = plugin_install.krita_destinations("win32", env, tmp_path)
    assert krita.folder == tmp_path / "Roaming" / "krita" / "pykrita"
    assert krita.kritarc == tmp_path / "Local" / "kritarc"
    support = tmp_path / "Library" / "Application Support"
    [gimp] = plugin_install.gimp_destinations("3.2", "darwin", {"PATH": ""}, tmp_path)
    assert gimp.folder == support / "GIMP" / "3.2" / "plug-ins"
    [krita] = plugin_install.krita_destinations("darwin", {}, tmp_path)
    assert krita.folder == support / "krita" / "pykrita"
    assert krita.kritarc == tmp_path / "Library" / "Preferences" / "kritarc"


def test_a_newer_gimp_never_started_is_left_alone_and_named(user_home, tmp_path, capsys):
    """Creating GIMP/3.2 before its first start would stop GIMP importing the 3.0 settings."""
    _gimp_plugins(user_home, "3.0").parent.mkdir(parents=True)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "gimp-3.2").touch()
    assert main(["install-plugin", "gimp"]) == 0
    out = capsys.readouterr().out
    assert "(GIMP 3.0)" in out and not (user_home / ".config" / "GIMP" / "3.2").exists()
    assert "note: GIMP 3.2 is installed but was never started" in out


def test_cli_says_where_it_installed(user_home, capsys):
    for series in ("3.0", "3.2"):
        _gimp_plugins(user_home, series).parent.mkdir(parents=True)
    assert main(["install-plugin", "gimp"]) == 0
    out = capsys.readouterr().out
    for series in ("3.0", "3.2"):
        assert f"in {_gimp_plugins(user_home, series) / 'lama_inpaint'} (GIMP {series})" in out
    assert main(["install-plugin", "gimp", "--gimp-version", "three"]) == 1
    assert "error: --gimp-version must look like" in capsys.readouterr().err


# -- replacing only what we installed ------------------------------------------------------


def test_dest_never_replaces_a_lama_inpaint_folder_we_did_not_install(tmp_path, capsys):
    theirs = tmp_path / "lama_inpaint"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    assert main(["install-plugin", "krita", "--dest", str(tmp_path)]) == 1
    assert "was not installed by lama-server" in capsys.readouterr().err
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "lama_inpaint.desktop").exists()


def test_reinstall_replaces_our_folder_and_drops_stale_files(tmp_path):
    target = plugin_install.install_plugin("gimp", tmp_path)[0].path
    (target / "__pycache__").mkdir()
    (target / "__pycache__" / "x.pyc").write_bytes(b"")
    (target / "lama_client.py").write_text("# old")  # the single-module client of 0.1
    (target / "old_module.py").write_text("")  # a file an older version shipped
    again = plugin_install.install_plugin("gimp", tmp_path)[0].path
    assert again == target and not (target / "old_module.py").exists()
    assert not (target / "lama_client.py").exists()
    assert _client_files(target / "lama_client") == _client_files(plugin_install.CLIENT_SOURCE)
    assert [p.name for p in tmp_path.iterdir()] == ["lama_inpaint"]  # no staging left behind


def test_a_folder_from_before_the_marker_counts_as_ours(tmp_path):
    target = plugin_install.install_plugin("krita", tmp_path)[0].path
    (target / plugin_install.MARKER).unlink()
    assert plugin_install.install_plugin("krita", tmp_path)[0].path == target
    (target / plugin_install.MARKER).unlink()
    shutil.rmtree(target / "lama_client")  # not our layout: someone else's plugin
    with pytest.raises(plugin_install.InstallError):
        plugin_install.install_plugin("krita", tmp_path)


def test_refuses_to_write_through_a_symlinked_desktop_file(tmp_path):
    elsewhere = tmp_path / "elsewhere.desktop"
    elsewhere.write_text("someone's file")
    dest = tmp_path / "pykrita"
    dest.mkdir()
    (dest / "lama_inpaint.desktop").symlink_to(elsewhere)
    with pytest.raises(plugin_install.InstallError, match="symbolic link"):
        plugin_install.install_plugin("krita", dest)
    assert elsewhere.read_text() == "someone's file"
    assert not (dest / "lama_inpaint").exists()


def test_refuses_a_symlinked_plugin_folder(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    dest = tmp_path / "plug-ins"
    dest.mkdir()
    (dest / "lama_inpaint").symlink_to(real, target_is_directory=True)
    with pytest.raises(plugin_install.InstallError, match="link"):
        plugin_install.install_plugin("gimp", dest)
    assert list(real.iterdir()) == []
