"""Who may talk to the server: a per-user token, and CURVE keys for remote use.

The token file (mode 0600 in the user's config folder) keeps other local users' programs out
of a daemon bound to loopback: only processes that can read the file can send requests.
Binding to a non-loopback address additionally needs ``--allow-remote``, and then ZeroMQ CURVE
encryption with a server key pair kept beside the token.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
import os
import secrets
import socket
import stat
import struct
import sys
from pathlib import Path

from lama_client.client import default_token_path

log = logging.getLogger("lama_server")


class TokenFileError(OSError):
    """The token file exists but cannot be used; the message says what to do."""


def load_or_create_token(path: str | Path | None = None) -> tuple[str, Path]:
    """Read the token file, creating it (mode 0600) with a random token if absent."""
    token_path = Path(path or default_token_path()).expanduser()
    if token_path.is_file():
        try:
            token = token_path.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise TokenFileError(
                f"token file {token_path} is not UTF-8 text; delete it and a new token is made"
            ) from None
        if token:
            _warn_if_readable_by_others(token_path)
            return token, token_path
    token_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    # O_EXCL | 0600 from the start: the token is never readable by others, not even briefly.
    tmp = token_path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.replace(tmp, token_path)
    return token, token_path


def _warn_if_readable_by_others(path: Path) -> None:
    mode = path.stat().st_mode
    if os.name == "posix" and mode & 0o077:
        log.warning(
            "token file %s had mode %o (other users could read it); set it to 0600. "
            "If others may have read it, delete it and restart for a new token",
            path, stat.S_IMODE(mode),
        )  # fmt: skip
        os.chmod(path, 0o600)


def token_matches(expected: str, given: str) -> bool:
    """Constant-time comparison, so timing does not leak the token."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc:// and for tcp:// endpoints bound to a loopback address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', interface names, host names: not provably loopback


def load_or_create_curve_keys(folder: Path) -> tuple[bytes, bytes]:
    """The server's CURVE key pair (public, secret), created on first remote use."""
    import zmq

    public_file, secret_file = folder / "server.key", folder / "server.key_secret"
    if public_file.is_file() and secret_file.is_file():
        _warn_if_readable_by_others(secret_file)
        return public_file.read_bytes().strip(), secret_file.read_bytes().strip()
    public, secret = zmq.curve_keypair()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_file.write_bytes(public + b"\n")
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if os.name == "posix":
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    with os.fdopen(fd, "wb") as f:
        f.write(secret + b"\n")
    return public, secret


def prepare_ipc_endpoint(endpoint: str) -> None:
    """Make ``ipc://PATH`` safe to bind: only in a private folder, never over a live server.

    The socket's folder must be one only this user can enter: created here with mode 0700 when
    missing, refused (``OSError`` with what to do) when it exists and others may enter it, so
    nobody can connect in the moment between bind and chmod, or replace the socket. Linux's
    abstract sockets (``ipc://@name``) are open to every user: refused. libzmq unlinks
    whatever is at PATH when it binds, so a second server would silently hijack the first
    one's clients: refuse when something answers there; remove only a stale socket file.
    """
    path = Path(endpoint[len("ipc://") :])
    if str(path).startswith("@"):
        raise OSError(
            errno.EINVAL,
            f"{endpoint}: an abstract socket is open to every user; use a path in a private "
            "folder, e.g. ipc://$XDG_RUNTIME_DIR/lama/lama.sock",
        )
    if not hasattr(socket, "AF_UNIX"):
        return
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    _require_private_folder(path.parent, endpoint)
    if not (path.exists() or path.is_symlink()):
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing the stale socket file %s", path)
        path.unlink(missing_ok=True)
        return
    except OSError:
        pass  # e.g. a timeout: treat as alive
    finally:
        probe.close()
    raise OSError(
        errno.EADDRINUSE,
        f"another server is listening at {endpoint}; stop it or choose another path",
    )


def _require_private_folder(folder: Path, endpoint: str) -> None:
    info = folder.lstat()
    owner = os.geteuid() if hasattr(os, "geteuid") else info.st_uid
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner or info.st_mode & 0o077:
        raise OSError(
            errno.EPERM,
            f"{endpoint}: the folder {folder} is not private to this user (mode "
            f"{stat.S_IMODE(info.st_mode):o}); put the socket in a folder lama-server creates, "
            "e.g. ipc://$XDG_RUNTIME_DIR/lama/lama.sock",
        )


def secure_ipc_socket(endpoint: str) -> None:
    """Only this user may connect to the bound socket (its folder is private already)."""
    path = Path(endpoint[len("ipc://") :])
    if path.exists():
        os.chmod(path, 0o600)  # connecting to a Unix socket needs write permission on it


def peer_uid(sock: socket.socket, tables: dict[str, str] | None = None) -> int | None:
    """The user id of the process at the other end of an accepted local connection, where
    the system says (Linux: ``SO_PEERCRED`` for Unix sockets, the kernel's socket table for
    loopback TCP); None elsewhere, or when the peer is already gone.

    ``tables``: socket tables read earlier, reused while they hold the connection (a burst
    of accepts then reads the kernel's table once, not once per connection); updated here.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        if sock.family == socket.AF_UNIX:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return struct.unpack("3i", creds)[1]
        return _tcp_peer_uid(sock.getpeername(), sock.getsockname(), sock.family, tables)
    except (OSError, ValueError, IndexError):
        return None


def _tcp_peer_uid(
    peer: tuple, ours: tuple, family: int, tables: dict[str, str] | None
) -> int | None:
    """The peer's socket is a line of /proc/net/tcp (or tcp6) whose local address is the
    peer's and whose remote one is ours; its eighth column is the owner's uid."""
    if family == socket.AF_INET:
        sources = (("/proc/net/tcp", _hex_v4), ("/proc/net/tcp6", _hex_v4_mapped))
    else:
        sources = (("/proc/net/tcp6", _hex_v6),)
    for table, hexed in sources:
        needle = f"{hexed(peer[0])}:{peer[1]:04X} {hexed(ours[0])}:{ours[1]:04X} "
        text = tables.get(table, "") if tables is not None else ""
        at = text.find(needle)
        if at < 0:  # not read yet, or read before this connection existed
            with open(table, encoding="ascii") as f:
                text = f.read()
            if tables is not None:
                tables[table] = text
            at = text.find(needle)
        if at >= 0:
            return int(text[at : text.find("\n", at)].split()[6])
    return None


def _hex_v4(address: str) -> str:
    return f"{struct.unpack('=I', socket.inet_aton(address))[0]:08X}"


def _hex_v6(address: str) -> str:
    words = struct.unpack("=4I", socket.inet_pton(socket.AF_INET6, address.split("%")[0]))
    return "".join(f"{w:08X}" for w in words)


def _hex_v4_mapped(address: str) -> str:
    return _hex_v6(f"::ffff:{address}")
