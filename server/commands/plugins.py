"""Put the Krita and GIMP plugins where the hosts find them, with the client bundled in.

Each plugin gets a copy of the :mod:`lama_client` package as ``lama_client/``: the hosts' Python
has no pip, so the plugin must carry the only network code it needs.

Without ``--dest`` the installer finds the user's hosts itself: every GIMP 3.x user folder
(native, Flatpak, Snap; GIMP 3.2 reads only ``GIMP/3.2``, not ``GIMP/3.0``) and every Krita
profile (native, which AppImages share, Flatpak, Snap), enabling the plugin in each ``kritarc``.
It only ever replaces a plugin folder it installed itself.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lama_client

HOSTS = ("krita", "gimp")
PLUGIN_NAME = "lama_inpaint"
CLIENT_SOURCE = Path(lama_client.__file__).parent  # the whole stdlib-only package
IGNORED = shutil.ignore_patterns("__pycache__")
# Written into every plugin folder we install, so a reinstall knows the folder is ours.
MARKER = ".installed-by-lama-server"
GIMP_SERIES = re.compile(r"3\.\d+")
GIMP_ANY_SERIES = re.compile(r"\d+\.\d+")  # 2.10 too: a folder GIMP 3 imports settings from
START_GIMP_FIRST = (
    "start GIMP once (it creates its settings folder, importing older settings), "
    "then run `lama-server install-plugin gimp` again"
)
_GIMP_BINARY = re.compile(r"gimp(?:-console)?-(3\.\d+)(?:\.exe)?")

AFTER_INSTALL = {
    "krita": "Restart Krita; then select an object and run Tools › Scripts › Remove object "
    "(Ctrl+Alt+Shift+R). Settings: Tools › Scripts › LaMa settings…",
    "gimp": "Restart GIMP; then select an object and run Filters › LaMa Inpaint.",
}


class InstallError(ValueError):
    """The plugin cannot be installed there without harming what is already in place."""


@dataclass(frozen=True)
class Destination:
    """One host installation's plugin folder, and its ``kritarc`` (Krita only)."""

    label: str  # e.g. "GIMP 3.2 (Flatpak)", said to the user
    folder: Path  # the folder that gets ``lama_inpaint/`` (``pykrita``, ``plug-ins``)
    kritarc: Path | None = None
    # A Flatpak/Snap host's own config folder: its plugin looks for the token there, not in
    # the user's, so the installer puts a copy of the server's token there.
    sandbox_config: Path | None = None


@dataclass(frozen=True)
class Installation:
    """Where the plugin went."""

    label: str
    path: Path  # the installed ``lama_inpaint`` folder


def plugin_source(host: str) -> Path:
    """The plugin's files: inside the installed package, or in the repository checkout."""
    # Installed: lama_server/plugins/HOST; in a checkout: plugins/HOST beside server/.
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "plugins" / host, here.parents[2] / "plugins" / host):
        if (candidate / PLUGIN_NAME).is_dir():
            return candidate
    raise FileNotFoundError(f"the {host} plugin files are missing from this installation")


# -- where the hosts look --------------------------------------------------------------------


def _env_dir(env: Mapping[str, str], name: str, fallback: Path) -> Path:
    """A folder from the environment; empty or relative means unset (the XDG rule)."""
    value = env.get(name, "")
    return Path(value) if value and os.path.isabs(value) else fallback


def _user_dirs(platform: str, env: Mapping[str, str], home: Path) -> tuple[Path, Path, Path]:
    """(data, config, Krita-config) folders of this platform's native applications."""
    if platform == "win32":
        roaming = _env_dir(env, "APPDATA", home / "AppData" / "Roaming")
        return roaming, roaming, _env_dir(env, "LOCALAPPDATA", home / "AppData" / "Local")
    if platform == "darwin":
        support = home / "Library" / "Application Support"
        return support, support, home / "Library" / "Preferences"
    config = _env_dir(env, "XDG_CONFIG_HOME", home / ".config")
    return _env_dir(env, "XDG_DATA_HOME", home / ".local" / "share"), config, config


def _sandboxes(platform: str, home: Path, flatpak_id: str, snap: str) -> list[tuple[str, Path]]:
    """(label, app home) of the Flatpak and Snap builds, where the user has run them."""
    if platform in ("win32", "darwin"):
        return []
    found = []
    flatpak = home / ".var" / "app" / flatpak_id
    if flatpak.is_dir():
        found.append(("Flatpak", flatpak))
    if (home / "snap" / snap).is_dir():
        found.append(("Snap", home / "snap" / snap / "current"))
    return found


def _sandbox_config(label: str, app: Path) -> Path:
    """The XDG_CONFIG_HOME a Flatpak (APP/config) or Snap (APP/.config) app runs with."""
    return app / ("config" if label == "Flatpak" else ".config")


def gimp_config_roots(
    platform: str = sys.platform, env: Mapping[str, str] = os.environ, home: Path | None = None
) -> list[tuple[str, Path]]:
    """(build, ``GIMP`` folder) where GIMP keeps its per-series user folders; native first."""
    home = Path.home() if home is None else home
    roots = [("", _user_dirs(platform, env, home)[1] / "GIMP")]
    for label, app in _sandboxes(platform, home, "org.gimp.GIMP", "gimp"):
        roots.append((label, _sandbox_config(label, app) / "GIMP"))
    return roots


def installed_gimp_series(
    platform: str = sys.platform, env: Mapping[str, str] = os.environ
) -> list[str]:
    """GIMP 3 series whose program is on PATH (or in GIMP's Windows install folder)."""
    folders = [Path(p) for p in env.get("PATH", "").split(os.pathsep) if p]
    if platform == "win32":
        programs = _env_dir(env, "ProgramFiles", Path("C:/Program Files"))
        folders += [programs / "GIMP 3" / "bin"]
    series = set()
    for folder in folders:
        try:
            names = [p.name for p in folder.iterdir()]
        except OSError:
            continue
        series.update(m.group(1) for m in map(_GIMP_BINARY.fullmatch, names) if m)
    return sorted(series, key=_series_key)


def _series_key(series: str) -> tuple[int, ...]:
    return tuple(int(part) for part in series.split("."))


def gimp_destinations(
    version: str | None = None,
    platform: str = sys.platform,
    env: Mapping[str, str] = os.environ,
    home: Path | None = None,
) -> list[Destination]:
    """The ``plug-ins`` folders of every GIMP 3.x this user has, or of the one ``version`` names.

    GIMP creates ``GIMP/<series>/`` on its first start, importing the settings of an older
    series only when that folder does not exist yet; so the installer never creates a series
    folder while an older one is there to import from, and without ``version`` it creates none
    at all (which GIMP the user will run is theirs to say, by starting it once).
    """
    if version is not None and not GIMP_SERIES.fullmatch(version):
        raise InstallError(f"--gimp-version must look like 3.0 or 3.2, not {version!r}")
    gimp3_dir = env.get("GIMP3_DIRECTORY", "")
    if gimp3_dir and os.path.isabs(gimp3_dir):  # GIMP's own override of the user folder
        return [Destination("GIMP 3 ($GIMP3_DIRECTORY)", Path(gimp3_dir) / "plug-ins")]
    roots = gimp_config_roots(platform, env, home)
    found = []
    for build, root in roots:
        series = [name for name in _series_folders(root) if GIMP_SERIES.fullmatch(name)]
        found += [(s, build, root) for s in sorted(series, key=_series_key)]
    if version is not None:
        found = [f for f in found if f[0] == version] or [_new_series(version, roots[0][1])]
    elif not found:
        raise InstallError(f"no GIMP 3 settings folder in {roots[0][1]}: {START_GIMP_FIRST}")
    return [
        Destination(
            f"GIMP {s}" + (f" ({build})" if build else ""),
            root / s / "plug-ins",
            sandbox_config=root.parent if build else None,
        )
        for s, build, root in found
    ]


def _series_folders(root: Path) -> list[str]:
    """Names of the per-series folders (``2.10``, ``3.0``, …) in a ``GIMP`` folder."""
    if not root.is_dir():
        return []
    return [p.name for p in root.iterdir() if p.is_dir() and GIMP_ANY_SERIES.fullmatch(p.name)]


def _new_series(version: str, root: Path) -> tuple[str, str, Path]:
    """A series folder to create for ``--gimp-version``: only where GIMP has nothing to import."""
    older = sorted(
        (s for s in _series_folders(root) if _series_key(s) < _series_key(version)),
        key=_series_key,
    )
    if older:
        raise InstallError(
            f"GIMP {version} was never started: creating {root / version} now would stop it "
            f"importing your GIMP {older[-1]} settings; {START_GIMP_FIRST}"
        )
    return version, "", root


def gimp_never_started(
    platform: str = sys.platform, env: Mapping[str, str] = os.environ, home: Path | None = None
) -> list[str]:
    """GIMP 3 series on PATH that have no user folder yet while another series has one.

    The installer leaves those alone: GIMP imports an older series' settings only on a first
    start that finds no folder for its own series, so creating it would lose them.
    """
    if env.get("GIMP3_DIRECTORY"):
        return []
    roots = [root for _, root in gimp_config_roots(platform, env, home)]
    have = {p.name for root in roots if root.is_dir() for p in root.iterdir() if p.is_dir()}
    if not any(GIMP_SERIES.fullmatch(name) for name in have):
        return []
    return [s for s in installed_gimp_series(platform, env) if s not in have]


def krita_destinations(
    platform: str = sys.platform, env: Mapping[str, str] = os.environ, home: Path | None = None
) -> list[Destination]:
    """Every Krita profile this user has: native (AppImages use it too), Flatpak, Snap.

    The native one is included whenever it exists or nothing else does.
    """
    home = Path.home() if home is None else home
    data, _, rc_dir = _user_dirs(platform, env, home)
    native = Destination("Krita", data / "krita" / "pykrita", rc_dir / "kritarc")
    others = []
    for label, app in _sandboxes(platform, home, "org.kde.krita", "krita"):
        # Flatpak's XDG data folder is APP/data; a Snap's is APP/.local/share.
        data_dir = app / ("data" if label == "Flatpak" else ".local/share")
        config = _sandbox_config(label, app)
        others.append(
            Destination(
                f"Krita ({label})", data_dir / "krita" / "pykrita", config / "kritarc", config
            )
        )
    native_used = (data / "krita").is_dir() or native.kritarc.is_file()
    return ([native] if native_used or not others else []) + others


def destinations(host: str, gimp_version: str | None = None) -> list[Destination]:
    """Where ``install-plugin HOST`` without ``--dest`` installs."""
    if host == "krita":
        if gimp_version is not None:
            raise InstallError("--gimp-version is for the GIMP plugin only")
        return krita_destinations()
    if host == "gimp":
        return gimp_destinations(gimp_version)
    raise ValueError(f"unknown host {host!r}; choose from {', '.join(HOSTS)}")


def install_notes(host: str, gimp_version: str | None = None) -> list[str]:
    """What the user should know after ``install-plugin HOST`` without ``--dest``."""
    if host != "gimp" or gimp_version is not None:
        return []
    return [
        f"GIMP {s} is installed but was never started: start it once (so it imports your "
        f"older settings), then run `lama-server install-plugin gimp` again"
        for s in gimp_never_started()
    ]


# -- installing ------------------------------------------------------------------------------


def install_plugin(
    host: str, dest: Path | None = None, *, gimp_version: str | None = None
) -> list[Installation]:
    """Install the plugin (and the client) into ``dest``, or for every host the user has.

    Everything is checked before anything is written: a ``lama_inpaint`` folder we did not
    install, or a symlinked ``.desktop`` file, stops the whole install.
    """
    if host not in HOSTS:
        raise ValueError(f"unknown host {host!r}; choose from {', '.join(HOSTS)}")
    if dest is not None:
        if gimp_version is not None:
            raise InstallError("give --dest or --gimp-version, not both")
        targets = [Destination("--dest", Path(dest))]
    else:
        targets = destinations(host, gimp_version)
    for target in targets:
        _check_replaceable(host, target.folder)
    done = []
    for target in targets:
        done.append(Installation(target.label, _install_into(host, target.folder)))
        if target.kritarc is not None:
            enable_in_kritarc(target.kritarc)
        if target.sandbox_config is not None:
            share_token(target.sandbox_config)
    return done


def share_token(config_dir: Path) -> Path:
    """Copy the server's token (created now if the server never ran) to where a sandboxed
    host's plugin reads it: ``CONFIG_DIR/lama-inpaint/token``, mode 0600."""
    from lama_server.daemon.auth import load_or_create_token

    token, _ = load_or_create_token()
    path = config_dir / "lama-inpaint" / "token"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return path


def _installed_names(host: str) -> set[str]:
    source = plugin_source(host) / PLUGIN_NAME
    # lama_client.py: the single-module client that versions before 0.2 bundled.
    ours = {"lama_client", "lama_client.py", MARKER, "__pycache__"}
    return {p.name for p in source.iterdir()} | ours


def _check_replaceable(host: str, folder: Path) -> None:
    """Refuse to replace what is not ours, or to write through a symlinked file."""
    target = folder / PLUGIN_NAME
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InstallError(f"{target} is a link or a file, not a plugin folder; remove it first")
    if target.is_dir():
        names = {p.name for p in target.iterdir()}
        # Folders from before the marker existed: exactly our files, client included.
        legacy = bool({"lama_client", "lama_client.py"} & names) and names <= _installed_names(host)
        if MARKER not in names and not legacy:
            raise InstallError(
                f"{target} exists and was not installed by lama-server; "
                "move it away or choose another --dest"
            )
    desktop = folder / f"{PLUGIN_NAME}.desktop"
    if host == "krita" and (desktop.is_symlink() or (desktop.exists() and not desktop.is_file())):
        raise InstallError(f"{desktop} is a symbolic link or not a file; not writing through it")


def _install_into(host: str, folder: Path) -> Path:
    """Copy the plugin into ``folder``: built aside, then swapped in, so a failure loses nothing."""
    _check_replaceable(host, folder)
    source = plugin_source(host)
    target = folder / PLUGIN_NAME
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{PLUGIN_NAME}-", dir=folder))
    try:
        new = staging / PLUGIN_NAME
        shutil.copytree(source / PLUGIN_NAME, new, ignore=IGNORED)
        shutil.copytree(CLIENT_SOURCE, new / "lama_client", ignore=IGNORED)
        (new / MARKER).write_text("installed by lama-server install-plugin\n", encoding="utf-8")
        if host == "gimp":
            script = new / f"{PLUGIN_NAME}.py"
            script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        else:
            desktop = staging / f"{PLUGIN_NAME}.desktop"
            shutil.copy(source / f"{PLUGIN_NAME}.desktop", desktop)
            os.replace(desktop, folder / desktop.name)  # replaces a file, never writes through
        if target.exists():
            target.rename(staging / "previous")
        new.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
        _install_into("krita", Path(tmp))
        with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp).as_posix())
    return output
