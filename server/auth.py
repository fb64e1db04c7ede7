"""Who may talk to the server: a per-user token, and CURVE keys for remote use.

The token file (mode 0600 in the user's config folder) keeps other local users' programs out
of a daemon bound to loopback: only processes that can read the file can send requests.
Binding to a non-loopback address additionally needs ``--allow-remote``, and then ZeroMQ CURVE
encryption with a server key pair kept beside the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from .client import default_token_path


def load_or_create_token(path: str | Path | None = None) -> tuple[str, Path]:
    """Read the token file, creating it (mode 0600) with a random token if absent."""
    token_path = Path(path or default_token_path()).expanduser()
    if token_path.is_file():
        token = token_path.read_text(encoding="utf-8").strip()
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
    if os.name == "posix" and path.stat().st_mode & 0o077:
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
        return public_file.read_bytes().strip(), secret_file.read_bytes().strip()
    public, secret = zmq.curve_keypair()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_file.write_bytes(public + b"\n")
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret + b"\n")
    return public, secret
