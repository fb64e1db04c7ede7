"""The bytes on the wire: msgpack (the subset the protocol uses) and ZMTP 3.x framing.

Shared by the client's own ZMTP transport and by lama-server's token gate and protocol decoder,
so that both ends read and write the same bytes by one set of rules (``docs/protocol.md``).
Standard library only: it travels inside the plug-ins.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

PROTOCOL_VERSION = 1
#: The largest legal message at the protocol's default limits (40 MP of RGBAF32 pixels plus a
#: mask plus 64 KiB): a frame header announcing more is refused before allocating anything.
MAX_REPLY_BYTES = 40_000_000 * 17 + 65536
MAX_COMMAND_BYTES = 65536  # ZMTP commands (READY, PING) are small
#: What the server's ``hello`` proof is an HMAC of (with the nonces), and a nonce's size.
#: v1 (protocol 1.1/1.2) covers the client's nonce only; v2 (1.3) binds the proof to the
#: connection: both nonces and the endpoint the client dialled, so a relay cannot pass it on.
HELLO_CONTEXT = b"lama-server hello v1\0"
HELLO_CONTEXT_V2 = b"lama-server hello v2\0"
NONCE_BYTES = 32
#: The most a client reads of any frame before the server has proven it knows the token: a
#: program squatting on the port cannot make the host allocate what a frame header announces.
UNVERIFIED_FRAME_BYTES = 65536


def hello_proof(token: str, nonce: bytes, server_nonce: bytes = b"", endpoint: str = "") -> bytes:
    """HMAC-SHA256 keyed by the token: over the client's nonce (v1), or, given the server's
    nonce, over both nonces and the endpoint (v2). One rule for the server and the client."""
    if server_nonce:
        message = HELLO_CONTEXT_V2 + bytes(nonce) + bytes(server_nonce) + endpoint.encode()
    else:
        message = HELLO_CONTEXT + bytes(nonce)
    return hmac.new(token.encode("utf-8"), message, hashlib.sha256).digest()

# --------------------------------------------------------------------------------------------
# msgpack (the subset the protocol uses)


class MsgpackError(ValueError):
    """Malformed or unsupported msgpack data."""


def packb(obj: Any) -> bytes:
    """Encode ``obj`` (None, bool, int, float, str, bytes, list/tuple, dict) as msgpack."""
    return b"".join(pack_parts(obj))


#: ``bin`` values at least this long are not copied by :func:`pack_parts`.
LARGE_BIN_BYTES = 65536


def pack_parts(obj: Any) -> list[bytes | memoryview]:
    """:func:`packb` as pieces whose concatenation is the encoding, without copying large
    ``bin`` values: their pieces are views of the caller's buffers (a 2048² image is 16 MB,
    and two copies of it cost ~20 ms), which must not change until the pieces are sent."""
    parts: list[bytes | memoryview] = []
    out = bytearray()
    _pack(obj, out, 0, parts)
    if out:
        parts.append(bytes(out))
    return parts


def _pack(obj: Any, out: bytearray, depth: int, parts: list | None = None) -> None:
    if depth > 64:
        raise MsgpackError("nesting too deep")
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, int):
        _pack_int(obj, out)
    elif isinstance(obj, float):
        out.append(0xCB)
        out += struct.pack(">d", obj)
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
        n = len(data)
        out += bytes((0xA0 | n,)) if n < 32 else _sized(n, 0xD9, 0xDA, 0xDB)
        out += data
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _pack_bin(memoryview(obj).cast("B"), out, parts)
    elif isinstance(obj, (list, tuple)):
        n = len(obj)
        out += bytes((0x90 | n,)) if n < 16 else _sized(n, None, 0xDC, 0xDD)
        for item in obj:
            _pack(item, out, depth + 1, parts)
    elif isinstance(obj, dict):
        n = len(obj)
        out += bytes((0x80 | n,)) if n < 16 else _sized(n, None, 0xDE, 0xDF)
        for key, value in obj.items():
            _pack(key, out, depth + 1, parts)
            _pack(value, out, depth + 1, parts)
    else:
        raise MsgpackError(f"cannot encode {type(obj).__name__}")


def _sized(n: int, type8: int | None, type16: int, type32: int) -> bytes:
    """The header of a str/bin/array/map of ``n`` items: the narrowest of 8, 16, 32 bits."""
    if type8 is not None and n < 0x100:
        return bytes((type8, n))
    if n < 0x10000:
        return bytes((type16,)) + struct.pack(">H", n)
    return bytes((type32,)) + struct.pack(">I", n)


def _pack_bin(data: memoryview, out: bytearray, parts: list | None) -> None:
    n = len(data)
    out += _sized(n, 0xC4, 0xC5, 0xC6)
    if parts is not None and n >= LARGE_BIN_BYTES:
        parts.append(bytes(out))  # what came before, then the caller's buffer itself
        parts.append(data)
        out.clear()
    else:
        out += data


def _pack_int(n: int, out: bytearray) -> None:
    if 0 <= n < 0x80:
        out.append(n)
    elif -32 <= n < 0:
        out.append(n & 0xFF)
    elif 0 <= n < 0x100:
        out += bytes((0xCC, n))
    elif 0 <= n < 0x10000:
        out += b"\xcd" + struct.pack(">H", n)
    elif 0 <= n < 0x100000000:
        out += b"\xce" + struct.pack(">I", n)
    elif 0 <= n < 1 << 64:
        out += b"\xcf" + struct.pack(">Q", n)
    elif -0x80 <= n < 0:
        out += b"\xd0" + struct.pack(">b", n)
    elif -0x8000 <= n < 0:
        out += b"\xd1" + struct.pack(">h", n)
    elif -0x80000000 <= n < 0:
        out += b"\xd2" + struct.pack(">i", n)
    elif -(1 << 63) <= n < 0:
        out += b"\xd3" + struct.pack(">q", n)
    else:
        raise MsgpackError(f"integer out of range: {n}")


def unpackb(data: bytes, copy_bin: bool = True) -> Any:
    """Decode one msgpack object that spans all of ``data``.

    ``copy_bin=False`` returns ``bin`` values as read-only ``memoryview`` slices of ``data``
    (no copy of many-MB pixel fields; ``data`` stays alive while they do).
    """
    view = memoryview(data).cast("B")
    obj, end = unpack_from(view, 0, 0, copy_bin)
    if end != len(view):
        raise MsgpackError(f"{len(view) - end} bytes of trailing data")
    return obj


_FIXED = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i",
          0xD3: ">q", 0xCA: ">f", 0xCB: ">d"}  # fmt: skip


def _take(view: memoryview, pos: int, n: int) -> memoryview:
    if n < 0 or pos + n > len(view):
        raise MsgpackError("truncated data")
    return view[pos : pos + n]


def unpack_from(
    view: memoryview, pos: int, depth: int = 0, copy_bin: bool = True
) -> tuple[Any, int]:
    """Decode the msgpack object that starts at ``pos``: (the object, where it ends).

    ``depth`` is the nesting level ``view[pos]`` sits at (deeper than 64 is refused);
    ``copy_bin`` as for :func:`unpackb`. Lets the server read a message's first fields
    without decoding the rest.
    """
    if depth > 64:
        raise MsgpackError("nesting too deep")
    b = _take(view, pos, 1)[0]
    pos += 1
    if b <= 0x7F:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if 0xA0 <= b <= 0xBF:
        return _str(view, pos, b & 0x1F)
    if 0x90 <= b <= 0x9F:
        return _array(view, pos, b & 0x0F, depth, copy_bin)
    if 0x80 <= b <= 0x8F:
        return _map(view, pos, b & 0x0F, depth, copy_bin)
    if b == 0xC0:
        return None, pos
    if b == 0xC2:
        return False, pos
    if b == 0xC3:
        return True, pos
    if b in _FIXED:
        fmt = _FIXED[b]
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, _take(view, pos, size))[0], pos + size
    if b in (0xD9, 0xDA, 0xDB, 0xC4, 0xC5, 0xC6, 0xDC, 0xDD, 0xDE, 0xDF):
        fmt = {0xD9: ">B", 0xC4: ">B", 0xDA: ">H", 0xC5: ">H", 0xDC: ">H", 0xDE: ">H"}.get(b, ">I")
        size = struct.calcsize(fmt)
        n = struct.unpack(fmt, _take(view, pos, size))[0]
        pos += size
        if b in (0xD9, 0xDA, 0xDB):
            return _str(view, pos, n)
        if b in (0xC4, 0xC5, 0xC6):
            data = _take(view, pos, n)
            return (bytes(data) if copy_bin else data.toreadonly()), pos + n
        if b in (0xDC, 0xDD):
            return _array(view, pos, n, depth, copy_bin)
        return _map(view, pos, n, depth, copy_bin)
    raise MsgpackError(f"unsupported msgpack type byte 0x{b:02x}")


def _str(view: memoryview, pos: int, n: int) -> tuple[str, int]:
    try:
        return bytes(_take(view, pos, n)).decode("utf-8"), pos + n
    except UnicodeDecodeError as exc:
        raise MsgpackError(f"invalid UTF-8 in string: {exc}") from None


def _array(view: memoryview, pos: int, n: int, depth: int, copy_bin: bool) -> tuple[list, int]:
    if n > len(view) - pos:  # every element takes at least a byte: refuse before allocating
        raise MsgpackError("truncated data")
    items = []
    for _ in range(n):
        item, pos = unpack_from(view, pos, depth + 1, copy_bin)
        items.append(item)
    return items, pos


def _map(view: memoryview, pos: int, n: int, depth: int, copy_bin: bool) -> tuple[dict, int]:
    if 2 * n > len(view) - pos:
        raise MsgpackError("truncated data")
    result = {}
    for _ in range(n):
        key, pos = unpack_from(view, pos, depth + 1, copy_bin)
        value, pos = unpack_from(view, pos, depth + 1, copy_bin)
        try:
            result[key] = value
        except TypeError:
            raise MsgpackError(f"unhashable map key of type {type(key).__name__}") from None
    return result, pos


# --------------------------------------------------------------------------------------------
# ZMTP 3.x over a plain socket (DEALER side, NULL mechanism)

#: The flag bits of a ZMTP frame's first byte.
FLAG_MORE, FLAG_LONG, FLAG_COMMAND = 0x01, 0x02, 0x04


def zmtp_greeting(as_server: bool = False) -> bytes:
    """The 64-byte ZMTP 3.0 greeting for the NULL mechanism."""
    return (
        b"\xff" + b"\x00" * 8 + b"\x7f" + bytes((3, 0)) + b"NULL".ljust(20, b"\x00")
        + bytes((1 if as_server else 0,)) + b"\x00" * 31
    )  # fmt: skip


def zmtp_frame_header(size: int, more: bool = False, command: bool = False) -> bytes:
    """The flags and size bytes that start a ZMTP frame (short or long form)."""
    flags = (FLAG_MORE if more else 0) | (FLAG_COMMAND if command else 0)
    if size < 256:
        return bytes((flags, size))
    return bytes((flags | FLAG_LONG,)) + struct.pack(">Q", size)


def zmtp_frame(body: bytes, more: bool = False, command: bool = False) -> bytes:
    """Encode one ZMTP frame (short or long form)."""
    return zmtp_frame_header(len(body), more, command) + body


def zmtp_ready(socket_type: str) -> bytes:
    """A READY command frame with the Socket-Type property and an empty Identity."""
    body = b"\x05READY"
    for name, value in ((b"Socket-Type", socket_type.encode("ascii")), (b"Identity", b"")):
        body += bytes((len(name),)) + name + struct.pack(">I", len(value)) + value
    return zmtp_frame(body, command=True)


def parse_properties(data: bytes) -> dict[str, bytes]:
    """Metadata properties of a READY command body (after the name)."""
    props, pos = {}, 0
    while pos < len(data):
        n = data[pos]
        if pos + 1 + n + 4 > len(data):
            raise ValueError("truncated READY property")
        name = data[pos + 1 : pos + 1 + n].decode("ascii", "replace")
        pos += 1 + n
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        if pos + 4 + size > len(data):
            raise ValueError("truncated READY property")
        props[name] = data[pos + 4 : pos + 4 + size]
        pos += 4 + size
    return props


def command_name(body: bytes) -> bytes:
    """The name of a ZMTP command frame's body (``READY``, ``PING``…), or b"" if empty."""
    return body[1 : 1 + body[0]] if body else b""
