"""Put the Krita and GIMP plugins where the hosts find them, with the client bundled in.

Each plugin gets a copy of :mod:`lama_server.client` as ``lama_client.py``: the hosts' Python
has no pip, so the plugin must carry the only network code it needs.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

HOSTS = ("krita", "gimp")
PLUGIN_NAME = "lama_inpaint"
CLIENT_SOURCE = Path(__file__).with_name("client.py")

AFTER_INSTALL = {
    "krita": "Restart Krita; then select an object and run Tools › Scripts › Remove object "
    "(Ctrl+Alt+Shift+R). Settings: Tools › Scripts › LaMa settings…",
    "gimp": "Restart GIMP; then select an object and run Filters › LaMa Inpaint.",
}


def plugin_source(host: str) -> Path:
    """The plugin's files: inside the installed package, or in the repository checkout."""
    folder = f"{host}_plugin"
    for candidate in (Path(__file__).parent / folder, Path(__file__).resolve().parents[1] / folder):
        if (candidate / PLUGIN_NAME).is_dir():
            return candidate
    raise FileNotFoundError(f"the {host} plugin files are missing from this installation")


def _home_dirs() -> tuple[Path, Path, Path]:
    """(data, config, local-config) folders of this platform."""
    home = Path.home()
    if sys.platform == "win32":
        roaming = Path(os.environ.get("APPDATA", home / "AppData" / "Roaming"))
        local = Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local"))
        return roaming, roaming, local
    if sys.platform == "darwin":
        support = home / "Library" / "Application Support"
        return support, support, home / "Library" / "Preferences"
    data = Path(os.environ.get("XDG_DATA_HOME", home / ".local" / "share"))
    config = Path(os.environ.get("XDG_CONFIG_HOME", home / ".config"))
    return data, config, config


def default_destination(host: str) -> Path:
    """The host's own plugin folder for this user."""
    data, config, _ = _home_dirs()
    if host == "krita":
        return data / "krita" / "pykrita"
    if host == "gimp":
        return config / "GIMP" / "3.0" / "plug-ins"
    raise ValueError(f"unknown host {host!r}; choose from {', '.join(HOSTS)}")


def kritarc_path() -> Path:
    """Krita's main configuration file for this user."""
    return _home_dirs()[2] / "kritarc"


def install_plugin(host: str, dest: Path | None = None) -> Path:
    """Copy the plugin (and the client) into ``dest`` or the host's folder; returns its path."""
    if host not in HOSTS:
        raise ValueError(f"unknown host {host!r}; choose from {', '.join(HOSTS)}")
    source = plugin_source(host)
    root = Path(dest) if dest is not None else default_destination(host)
    target = root / PLUGIN_NAME
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source / PLUGIN_NAME, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CLIENT_SOURCE, target / "lama_client.py")
    if host == "krita":
        shutil.copy(source / f"{PLUGIN_NAME}.desktop", root / f"{PLUGIN_NAME}.desktop")
        if dest is None:
            enable_in_kritarc(kritarc_path())
    else:
        script = target / f"{PLUGIN_NAME}.py"
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def enable_in_kritarc(path: Path, name: str = PLUGIN_NAME) -> None:
    """Set ``[python] enable_<name>=true`` in kritarc, keeping every other line as it is."""
    key = f"enable_{name}"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    out, in_python, done = [], False, False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if in_python and not done:
                out.append(f"{key}=true")
                done = True
            in_python = stripped == "[python]"
        elif in_python and stripped.split("=", 1)[0].strip() == key:
            if not done:
                out.append(f"{key}=true")
                done = True
            continue
        out.append(line)
    if not done:
        if not in_python:
            out += ["", "[python]"] if out else ["[python]"]
        out.append(f"{key}=true")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def package_plugin(host: str, output: Path) -> Path:
    """The zip Krita's *Tools › Scripts › Import Python Plugin from File…* accepts."""
    if host != "krita":
        raise ValueError(
            "only the Krita plugin is distributed as a zip (GIMP: install-plugin gimp)"
        )
    output = Path(output)
    with tempfile.TemporaryDirectory() as tmp:
        install_plugin("krita", Path(tmp))
        with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp).as_posix())
    return output
