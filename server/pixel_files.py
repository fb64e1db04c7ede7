"""Pixel files: local clients pass pixels through a shared file instead of inside messages.

A 2048² RGBA request is 20 MB each way; sent inside messages it is copied by the client's
packer, the kernel (twice: client → token gate → ROUTER), libzmq, the reply builder and the
client's unpacker, and every fresh buffer of that size costs page faults besides. A client on
the same machine can instead write the pixels into a file in the server's **pixel folder**
(announced in the ``hello`` reply as ``pixel_dir``) and name the file in the request; the
server maps it, reads the pixels in place, writes the result back into the same bytes and
replies with a small message (see ``docs/protocol.md``).

What the server trusts: only a bare file *name* (``NAME``) inside its own folder, which it
created with mode 0700 (so only its user can put files there), opened without following
links, a regular file with one link (a hard link to some other file is refused), owned by the
server's user, at least as long as the request says. Only loopback and ``ipc://`` servers have
a pixel folder; remote (CURVE) clients always send pixels inline.
"""

from __future__ import annotations

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

#: A file name a client may use: no separators, no leading dot, at most 64 characters.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Files nobody wrote to for this long are taken to be left behind by a client that crashed.
STALE_AFTER_S = 3600.0
_OPEN_FLAGS = (
    os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)  # fmt: skip


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
    elsewhere (and as the last resort) the per-user temporary folder.
    """
    if sys.platform.startswith("linux"):
        for candidate in ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR") or ""):
            if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
                return candidate
    return None  # tempfile's default


class PixelFolder:
    """The server's private folder of pixel files, removed when the server stops."""

    def __init__(self, parent: str | None = None, max_bytes: int | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="lama-pixels-", dir=parent or default_parent()))
        os.chmod(self.path, 0o700)  # mkdtemp does this already; say it where it matters
        self.max_bytes = max_bytes

    def open(self, ref: FileRef) -> memoryview:
        """A writable view of ``ref``'s bytes, mapped from the client's file (no copy).

        The mapping lives as long as the view (and anything made from it) does.
        """
        if not NAME.fullmatch(ref.name):
            raise PixelFileError(f"{ref.name[:70]!r} is not a pixel file name")
        if self.max_bytes is not None and ref.end > self.max_bytes:
            raise PixelFileError(f"the pixel file range ends past {self.max_bytes} bytes")
        path = self.path / ref.name
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            raise PixelFileError(
                f"no pixel file {ref.name!r} in {self.path} (is the client in a sandbox that "
                "sees another file system?)"
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

    def sweep(self, now: float | None = None) -> int:
        """Remove files not written for :data:`STALE_AFTER_S`; returns how many."""
        now = time.time() if now is None else now
        removed = 0
        for entry in os.scandir(self.path):
            try:
                if entry.is_file(follow_symlinks=False) and (
                    now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
                ):
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                pass  # the client removed it meanwhile
        return removed

    def remove(self) -> None:
        """Delete the folder and what is left in it (clients' open files live on unnamed)."""
        shutil.rmtree(self.path, ignore_errors=True)
