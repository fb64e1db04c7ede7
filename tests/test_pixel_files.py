"""Pixel files: local clients pass pixels through the server's folder instead of messages."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import time
import uuid

import msgpack
import numpy as np
import pytest
from test_server import BOTH, raw_call, sample

from lama_client import client as client_module
from lama_client.client import ImageData, LamaClient, RequestTimeout, ZmtpConnection
from lama_model.pipeline import InpaintOptions, inpaint
from lama_server.wire import pixel_files
from lama_server.wire.pixel_files import (
    STALE_AFTER_S,
    FileRef,
    PixelFileError,
    PixelFolder,
    remove_abandoned,
)
from lama_server.wire.pixel_formats import FORMATS, array_to_wire


def pixel_dir_of(server) -> str | None:
    """The folder a server names in its hello reply (None: it offers no pixel files)."""
    with LamaClient(server.endpoint, server.token, use_pyzmq=False) as c:
        c.ping()
        return c._pixel_dir


def big_sample(w=640, h=480):
    """An image over the client's pixel-file threshold (1.2 MB of RGBA8)."""
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[200:260, 300:380] = 255
    return rgba, mask


@BOTH
def test_large_image_goes_through_a_pixel_file_and_equals_inline(running_server, use_pyzmq):
    rgba, mask = big_sample()
    h, w = mask.shape
    image = ImageData(w, h, "RGBA8", rgba.tobytes())
    replies = {}
    for files in (True, False):
        with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=use_pyzmq,
                        pixel_files=files) as c:  # fmt: skip
            replies[files] = c.inpaint(image, mask.tobytes(), {"strategy": "crop"})
            assert c.last_used_pixel_file is files
    assert replies[True] == replies[False]
    assert replies[True].data != image.data  # the hole was filled


@pytest.mark.parametrize(
    "fmt, output",
    [(f, "composite") for f in sorted(FORMATS)]
    + [(f, "layer") for f in sorted(FORMATS) if FORMATS[f].has_alpha],
)
def test_every_format_answers_the_same_through_a_file(running_server, served_tiny, fmt, output):
    rgba, mask = sample()
    spec = FORMATS[fmt]
    pixels = rgba[:, :, : spec.channels]  # canonical order: RGBA, RGB, Y, YA (two: Y and A)
    if spec.dtype.itemsize == 2:
        pixels = pixels.astype(np.uint16) * 257
    elif spec.dtype.kind == "f":
        pixels = pixels.astype(np.float32) / 255
    h, w = mask.shape
    image = ImageData(w, h, fmt, array_to_wire(fmt, pixels))
    options = {"mask_grow": 2, "feather": 3, "output": output}
    replies = {}
    for files in (True, False):
        with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=False,
                        pixel_files=files) as c:  # fmt: skip
            c.pixel_file_min_bytes = 0  # this small image through a file too
            replies[files] = c.inpaint(image, mask.tobytes(), options)
            assert c.last_used_pixel_file is files
    assert replies[True] == replies[False]
    if output == "composite":
        expected = inpaint(served_tiny, pixels, mask, InpaintOptions(mask_grow=2, feather=3)).image
        assert replies[True].data == array_to_wire(fmt, expected)


def test_client_reuses_its_file_and_removes_it_when_closed(running_server):
    rgba, mask = big_sample()
    h, w = mask.shape
    with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=False) as c:
        c.inpaint(ImageData(w, h, "RGBA8", rgba.tobytes()), mask.tobytes())
        first = c._pixel_file.path
        assert stat.S_IMODE(os.stat(first).st_mode) == 0o600
        c.inpaint(ImageData(w, h, "RGBA8", rgba.tobytes()), mask.tobytes())
        assert c._pixel_file.path == first
    assert not os.path.exists(first)


def test_abandoned_request_never_reuses_its_file(running_server):
    rgba, mask = big_sample()
    h, w = mask.shape
    c = LamaClient(running_server.endpoint, running_server.token, use_pyzmq=False)
    try:
        c.inpaint(ImageData(w, h, "RGBA8", rgba.tobytes()), mask.tobytes())
        used = c._pixel_file.path
        # A forward of about a second, far past the timeout: the client gives up on the request
        # while the server may still write its answer into that file later.
        c.timeout = 0.3
        big, hole = np.zeros((1024, 1024, 4), np.uint8), np.full((1024, 1024), 255, np.uint8)
        with pytest.raises(RequestTimeout):
            c.inpaint(ImageData(1024, 1024, "RGBA8", big.tobytes()), hole.tobytes(),
                      {"strategy": "original"})  # fmt: skip
        assert c._pixel_file is None and not os.path.exists(used)
        c.timeout = 60
        c.inpaint(ImageData(w, h, "RGBA8", rgba.tobytes()), mask.tobytes())
        assert c.last_used_pixel_file and c._pixel_file.path != used
    finally:
        c.close()


def test_an_exception_mid_request_abandons_the_file_and_later_answers_are_right(running_server):
    """A progress callback that raises leaves the server working on the request: its answer
    must not land in the file the next request uses."""
    rgba, mask = big_sample()
    other = rgba[::-1].copy()
    h, w = mask.shape
    with LamaClient(running_server.endpoint, running_server.token, pixel_files=False) as c:
        expected = c.inpaint(ImageData(w, h, "RGBA8", other.tobytes()), mask.tobytes())

    def fail(_fraction, _stage):
        raise KeyError("a bug in the caller's progress callback")

    with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=False) as c:
        c.inpaint(ImageData(w, h, "RGBA8", rgba.tobytes()), mask.tobytes())
        used = c._pixel_file.path
        with pytest.raises(KeyError):
            c.inpaint(ImageData(w, h, "RGBA8", rgba.tobytes()), mask.tobytes(), progress=fail)
        assert c._pixel_file is None and not os.path.exists(used)
        got = c.inpaint(ImageData(w, h, "RGBA8", other.tobytes()), mask.tobytes())
        assert c.last_used_pixel_file
    assert got == expected


def test_a_swept_file_is_replaced_by_a_fresh_one(running_server, monkeypatch):
    """The server removes files idle for an hour; a client that kept one makes a new one."""
    rgba, mask = big_sample()
    h, w = mask.shape
    image = ImageData(w, h, "RGBA8", rgba.tobytes())
    with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=False) as c:
        first = c.inpaint(image, mask.tobytes())
        os.unlink(c._pixel_file.path)  # what the sweep does
        assert c.inpaint(image, mask.tobytes()) == first
        assert c.last_used_pixel_file and c.pixel_files
        # Swept just after the client looked: the server refuses the name, the client
        # retries once with a fresh file and keeps using files.
        monkeypatch.setattr(client_module._PixelFile, "removed", lambda self: False)
        os.unlink(c._pixel_file.path)
        assert c.inpaint(image, mask.tobytes()) == first
        assert c.last_used_pixel_file and c.pixel_files


def test_folder_out_of_the_servers_sight_falls_back_to_inline(
    running_server, tmp_path, monkeypatch
):
    """A sandboxed host (Flatpak) may write its file where the server cannot see it."""

    class ElsewhereFile(client_module._PixelFile):
        def __init__(self, folder: str) -> None:
            super().__init__(str(tmp_path))

    monkeypatch.setattr(client_module, "_PixelFile", ElsewhereFile)
    rgba, mask = big_sample()
    h, w = mask.shape
    image = ImageData(w, h, "RGBA8", rgba.tobytes())
    with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=False) as c:
        reply = c.inpaint(image, mask.tobytes(), {"strategy": "crop"})
        assert not c.last_used_pixel_file and not c.pixel_files  # inline from now on
        assert list(tmp_path.iterdir()) == []  # the unseen file was removed
    with LamaClient(running_server.endpoint, running_server.token, pixel_files=False) as c:
        assert reply == c.inpaint(image, mask.tobytes(), {"strategy": "crop"})


def test_server_without_pixel_files_gets_pixels_inline(server_factory):
    server = server_factory("--no-warmup", "--no-pixel-files")
    assert pixel_dir_of(server) is None
    rgba, mask = big_sample()
    h, w = mask.shape
    with LamaClient(server.endpoint, server.token, use_pyzmq=False) as c:
        c.inpaint(ImageData(w, h, "RGBA8", rgba.tobytes()), mask.tobytes(), {"strategy": "crop"})
        assert not c.last_used_pixel_file


def test_pixel_folder_is_private_and_removed_when_the_server_stops(server_factory):
    server = server_factory("--no-warmup")
    folder = pixel_dir_of(server)
    assert folder is not None
    info = os.stat(folder)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert server.stop() == 0
    assert not os.path.exists(folder)


def _file_request(server, image_ref: dict, mask_ref: dict, w=8, h=8) -> bytes:
    return msgpack.packb({
        "v": 1, "id": uuid.uuid4().hex, "token": server.token, "op": "inpaint",
        "image": {"w": w, "h": h, "format": "RGBA8", "file": image_ref},
        "mask": {"w": w, "h": h, "file": mask_ref},
    }, use_bin_type=True)  # fmt: skip


@pytest.mark.parametrize(
    "image_ref, mask_ref, code, text",
    [
        ({"name": "../token", "offset": 0}, {"name": "x", "offset": 256}, "no_pixel_file",
         "not a pixel file name"),
        ({"name": "missing.px", "offset": 0}, {"name": "missing.px", "offset": 256},
         "no_pixel_file", "no pixel file"),
        ({"name": "a.px", "offset": -1}, {"name": "a.px", "offset": 256}, "bad_request",
         "offset must be in 0..2**62"),
        ({"name": "a.px", "offset": 0}, {"name": "a.px", "offset": 200}, "bad_request",
         "overlap"),
        ({"name": 7, "offset": 0}, {"name": "a.px", "offset": 256}, "bad_request",
         "'image.file.name' must be a string"),
    ],
)  # fmt: skip
def test_bad_pixel_file_references_get_clear_errors(running_server, image_ref, mask_ref, code,
                                                    text):  # fmt: skip
    reply = raw_call(running_server.endpoint, _file_request(running_server, image_ref, mask_ref))
    assert reply["ok"] is False and reply["error"]["code"] == code
    assert text in reply["error"]["message"]


def test_stdlib_client_disables_nagle(running_server):
    """Nagle's algorithm plus delayed ACKs held every small message back ~40 ms."""
    conn = ZmtpConnection(running_server.endpoint, 5.0)
    try:
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        conn.close()


# --- the server's side, on its own -----------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    made = PixelFolder(str(tmp_path), max_bytes=1 << 20)
    yield made
    made.remove()


def _write(folder: PixelFolder, name: str, data: bytes) -> str:
    path = folder.path / name
    path.write_bytes(data)
    return str(path)


def test_folder_maps_the_named_range_writably(folder):
    _write(folder, "a.px", bytes(range(200)))
    view = folder.open(FileRef("a.px", 100, 50))
    assert bytes(view) == bytes(range(100, 150))
    view[:2] = b"\xff\xfe"
    del view
    assert (folder.path / "a.px").read_bytes()[100:102] == b"\xff\xfe"


@pytest.mark.parametrize("name", ["../a.px", ".hidden", "a/b", "", "x" * 65, "a\0b"])
def test_folder_refuses_names_that_are_not_bare_file_names(folder, name):
    with pytest.raises(PixelFileError, match="not a pixel file name"):
        folder.open(FileRef(name, 0, 1))


def test_folder_refuses_links_short_files_and_oversized_ranges(folder, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 64)
    os.symlink(secret, folder.path / "link.px")
    with pytest.raises(PixelFileError):
        folder.open(FileRef("link.px", 0, 8))
    os.link(secret, folder.path / "hard.px")
    with pytest.raises(PixelFileError, match="hard links"):
        folder.open(FileRef("hard.px", 0, 8))
    _write(folder, "short.px", b"x" * 10)
    with pytest.raises(PixelFileError, match="has 10 bytes; the request needs 11"):
        folder.open(FileRef("short.px", 1, 10))
    with pytest.raises(PixelFileError, match="past"):
        folder.open(FileRef("short.px", 1 << 20, 1))
    assert secret.read_bytes() == b"s" * 64


NEEDS_HANDLES = pytest.mark.skipif(not pixel_files._DIR_FD, reason="POSIX folder handles")


@NEEDS_HANDLES
def test_swapping_the_folder_for_a_link_reaches_nothing_else(folder, tmp_path):
    """The folder is used through a handle: a link put in its place leads nowhere."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "photo.px").write_bytes(b"p" * 64)
    os.utime(target / "photo.px", (0, 0))  # old enough for a sweep
    real = folder.path
    os.rename(real, tmp_path / "moved")
    os.symlink(target, real)
    assert not folder.intact()
    with pytest.raises(PixelFileError, match="no pixel file"):
        folder.open(FileRef("photo.px", 0, 8))
    assert folder.sweep() == 0
    folder.remove()
    assert (target / "photo.px").read_bytes() == b"p" * 64
    os.unlink(real)


@NEEDS_HANDLES
def test_a_new_folder_is_never_seen_unlocked(tmp_path, monkeypatch):
    """Another server starting at the same moment must not take a new folder for dead."""
    seen = []
    real_rename = os.rename

    def rename_and_look(*args, **kwargs):
        seen.append(remove_abandoned(str(tmp_path)))  # just before the lock gets its name
        real_rename(*args, **kwargs)
        seen.append(remove_abandoned(str(tmp_path)))  # just after

    monkeypatch.setattr(os, "rename", rename_and_look)
    made = PixelFolder(str(tmp_path))
    assert seen == [0, 0] and made.intact()
    made.remove()
    made.remove()  # once only: a second call touches nothing
    with pytest.raises(PixelFileError, match="gone"):
        made.open(FileRef("a.px", 0, 1))


@NEEDS_HANDLES
def test_folders_of_servers_that_died_are_removed_live_ones_kept(tmp_path):
    live = PixelFolder(str(tmp_path))
    dead = PixelFolder(str(tmp_path))
    _write(dead, "left.px", b"x")
    dead._lock_fd, lock = None, dead._lock_fd
    os.close(lock)  # as if its server was killed: the lock is free, the folder is still there
    assert remove_abandoned(str(tmp_path)) == 1
    assert live.path.is_dir() and not dead.path.exists()
    live.remove()
    assert not live.path.exists()


def test_server_replaces_a_deleted_pixel_folder(tmp_path, monkeypatch):
    from lama_server.daemon.router import Server, ServerConfig
    from lama_server.wire.protocol import Limits

    monkeypatch.setattr("lama_server.wire.pixel_files.default_parent", lambda: str(tmp_path))
    server = Server(ServerConfig("tcp://127.0.0.1:*", "token", Limits()))
    try:
        server.pixel_folder = PixelFolder(str(tmp_path))
        gone = server.pixel_folder.path
        shutil.rmtree(gone)
        server._sweep_pixel_folder()
        assert server.pixel_folder.intact() and server.pixel_folder.path != gone
    finally:
        server.close()


def test_sweep_removes_only_files_left_for_an_hour(folder):
    old = _write(folder, "old.px", b"o")
    fresh = _write(folder, "fresh.px", b"f")
    now = time.time()
    os.utime(old, (now - STALE_AFTER_S - 5, now - STALE_AFTER_S - 5))
    assert folder.sweep(now) == 1
    assert not os.path.exists(old) and os.path.exists(fresh)
