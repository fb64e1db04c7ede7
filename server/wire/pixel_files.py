"""Pixel files: local clients pass pixels through a shared file instead of inside messages.

A 2048² RGBA request is 20 MB each way; sent inside messages it is copied by the client's
packer, the kernel (twice: client → token gate → ROUTER), libzmq, the reply builder and the
client's unpacker, and every fresh buffer of that size costs page faults besides. A client on
the same machine can instead write the pixels into a file in the server's **pixel folder**
(announced in the ``hello`` reply as ``pixel_dir``) and name the file in the request; the
server maps it, reads the pixels in place, writes the result back into the same bytes and
replies with a small message (see ``docs/protocol.md``).

What the server trusts: only a bare file *name* (``NAME``) inside its own folder, which it
created with mode 0700 (so only its user can put files there) and keeps open as a handle,
opened without following links, a regular file with one link (a hard link to some other file
is refused), owned by the server's user, at least as long as the request says. Only loopback
and ``ipc://`` servers have a pixel folder; remote (CURVE) clients always send pixels inline.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: paths, not folder handles, and no clean-up of dead servers' folders
    fcntl = None

log = logging.getLogger("lama_server")

#: A file name a client may use: a letter or digit, then letters, digits, ``_.-``; at most 64.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PREFIX = "lama-pixels-"
#: Files nobody wrote to for this long are removed (a client that crashed left them; a live
#: client that finds its file gone makes a new one).
STALE_AFTER_S = 3600.0
_LOCK = ".lock"  # held (flock) while the server lives: a folder whose lock is free is abandoned
LOCKLESS_STALE_AFTER_S = 7 * 86400.0
_OPEN_FLAGS = (
    os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
)  # fmt: skip
#: Where the platform can, every file operation goes through a handle on the folder itself,
#: so swapping the folder's path for a link to another folder changes nothing.
_DIR_FD = os.open in os.supports_dir_fd and os.scandir in os.supports_fd and fcntl is not None


class PixelFileError(Exception):
    """The named pixel file cannot be used; the message says why, for the client's user."""


@dataclass(frozen=True)
class FileRef:
    """Where a request's pixels are: ``nbytes`` at ``offset`` of the file ``name``."""

    name: str
    offset: int
    nbytes: int

    @property
    def end(self) -> int:
        return self.offset + self.nbytes


def default_parent() -> str | None:
    """Where the pixel folder goes: RAM-backed when the system has such a place.

    Linux: ``/dev/shm`` (tmpfs: the file never reaches a disk), else ``$XDG_RUNTIME_DIR``;
    elsewhere (and as the last resort) the system's temporary folder.
    """
    if sys.platform.startswith("linux"):
        for candidate in ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR") or ""):
            if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
                return candidate
    return None  # tempfile's default


class PixelFolder:
    """The server's private folder of pixel files, removed when the server stops.

    On creation it also removes the folders of this user's servers that died without
    removing theirs (killed, crashed): a live server holds a lock inside its folder.
    """

    def __init__(self, parent: str | None = None, max_bytes: int | None = None) -> None:
        parent = parent or default_parent()
        removed = remove_abandoned(parent or tempfile.gettempdir())
        if removed:
            log.info("removed %d pixel folder(s) that stopped servers left", removed)
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        os.chmod(self.path, 0o700)  # mkdtemp does this already; say it where it matters
        self.max_bytes = max_bytes
        self._dir_fd: int | None = None
        self._lock_fd: int | None = None
        self._closed = False
        if _DIR_FD:
            try:
                self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                self._identity = _identity(os.fstat(self._dir_fd))
                self._lock_fd = _locked_lock_file(self._dir_fd)
            except OSError:
                for fd in (self._lock_fd, self._dir_fd):
                    if fd is not None:
                        os.close(fd)
                shutil.rmtree(self.path, ignore_errors=True)
                raise

    def open(self, ref: FileRef) -> memoryview:
        """A writable view of ``ref``'s bytes, mapped from the client's file (no copy).

        The mapping lives as long as the view (and anything made from it) does.
        """
        if self._closed:
            raise PixelFileError("the server's pixel folder is gone")
        if not NAME.fullmatch(ref.name):
            raise PixelFileError(f"{ref.name[:70]!r} is not a pixel file name")
        if self.max_bytes is not None and ref.end > self.max_bytes:
            raise PixelFileError(f"the pixel file range ends past {self.max_bytes} bytes")
        try:
            if self._dir_fd is not None:
                fd = os.open(ref.name, _OPEN_FLAGS, dir_fd=self._dir_fd)
            else:
                fd = os.open(self.path / ref.name, _OPEN_FLAGS)
        except FileNotFoundError:
            raise PixelFileError(
                f"no pixel file {ref.name!r} in the server's folder (is the client in a sandbox "
                "that sees another file system?)"
            ) from None
        except OSError as exc:
            raise PixelFileError(f"cannot open pixel file {ref.name!r} ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise PixelFileError(f"pixel file {ref.name!r} is not a regular file")
            if info.st_nlink != 1:
                raise PixelFileError(f"pixel file {ref.name!r} has other names (hard links)")
            if hasattr(os, "getuid") and info.st_uid != os.getuid():
                raise PixelFileError(f"pixel file {ref.name!r} belongs to another user")
            if info.st_size < ref.end:
                raise PixelFileError(
                    f"pixel file {ref.name!r} has {info.st_size} bytes; the request needs {ref.end}"
                )
            mapping = mmap.mmap(fd, ref.end)
        except OSError as exc:
            raise PixelFileError(f"cannot map pixel file {ref.name!r} ({exc})") from None
        finally:
            os.close(fd)
        return memoryview(mapping)[ref.offset : ref.end]

    def intact(self) -> bool:
        """Whether :attr:`path` is still this folder (not deleted, not replaced)."""
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        if self._dir_fd is None:
            return stat.S_ISDIR(now.st_mode)
        return stat.S_ISDIR(now.st_mode) and _identity(now) == self._identity

    def sweep(self, now: float | None = None) -> int:
        """Remove files not written for :data:`STALE_AFTER_S`; returns how many."""
        now = time.time() if now is None else now
        removed = 0
        try:
            entries = list(os.scandir(self._dir_fd if self._dir_fd is not None else self.path))
        except OSError:
            return 0  # the folder is gone: intact() says so
        for entry in entries:
            if entry.name == _LOCK:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode) or now - info.st_mtime <= STALE_AFTER_S:
                    continue
                if self._dir_fd is not None:
                    os.unlink(entry.name, dir_fd=self._dir_fd)
                else:
                    os.unlink(self.path / entry.name)
                removed += 1
            except OSError:
                pass  # the client removed it meanwhile
        return removed

    def remove(self) -> None:
        """Delete the folder and what is left in it (clients' open files live on unnamed).

        Once only: afterwards whatever takes the folder's path is not this folder."""
        if self._closed:
            return
        self._closed = True
        if self._dir_fd is None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            _empty(self._dir_fd)
            if self.intact():
                os.rmdir(self.path)
        except OSError:
            pass
        finally:
            for fd in (self._lock_fd, self._dir_fd):
                if fd is not None:
                    os.close(fd)
            self._dir_fd = self._lock_fd = None


def remove_abandoned(parent: str) -> int:
    """Remove this user's pixel folders in ``parent`` whose server is gone; returns how many.

    A live server holds the lock file inside its folder; a folder without one (it is being
    created, or predates the lock) is only removed once it is :data:`STALE_AFTER_S` old.
    """
    if not _DIR_FD:
        return 0
    removed = 0
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(PREFIX)]
    except OSError:
        return 0
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            dir_fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if _identity(os.fstat(dir_fd)) != _identity(info) or not _abandoned(dir_fd, info):
                continue
            _empty(dir_fd)
            os.rmdir(entry.path)
            removed += 1
        except OSError:
            pass
        finally:
            os.close(dir_fd)
    return removed


def _locked_lock_file(dir_fd: int) -> int:
    """Create the folder's ``.lock``, already locked: made and locked under another name,
    then renamed, so no other server ever sees it unlocked and takes the folder for dead."""
    fd = os.open(_LOCK + ".new", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)  # fmt: skip
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(_LOCK + ".new", _LOCK, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        os.close(fd)
        raise
    return fd


def _abandoned(dir_fd: int, info: os.stat_result) -> bool:
    try:
        lock = os.open(_LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        # Being created right now, or older than the lock: only when it is days old (a folder's
        # time changes only when files come and go, so an idle live one looks old).
        return time.time() - info.st_mtime > LOCKLESS_STALE_AFTER_S
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # its server holds the lock: alive
    finally:
        os.close(lock)  # closing drops our lock again
    return True


def _empty(dir_fd: int) -> None:
    """Unlink every file in the folder behind ``dir_fd`` (pixel folders hold no folders)."""
    for entry in os.scandir(dir_fd):
        try:
            os.unlink(entry.name, dir_fd=dir_fd)
        except OSError:
            pass


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino
