"""Wire protocol v1: message schema, validation, replies (see ``docs/protocol.md``).

Every field of a request is checked here, before anything large is allocated; a bad message
becomes a :class:`ProtocolError` with a code from :data:`ERROR_CODES`, which the transport turns
into an error reply. Nothing here touches sockets or the model.

The token is checked before pixel data is touched: a large message is first read only as far
as its leading scalar fields (``v``, ``id``, ``op``, ``token``), and ``bin`` fields are decoded
as zero-copy views of the received frame, never copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from lama_client import host_kit
from lama_client.wire import NONCE_BYTES, MsgpackError, unpack_from
from lama_model.choices import STRATEGIES
from lama_model.pipeline.options import InpaintOptions
from lama_server.wire.pixel_files import FileRef
from lama_server.wire.pixel_formats import FORMATS

VERSION = 1
#: Minor revision: 1 added ``hello`` (the server proves it knows the token); 2 added pixel
#: files (``pixel_dir`` in the hello reply, ``file`` instead of ``data`` for local clients);
#: 3 binds the hello proof to the connection (``hello: 2``: both nonces and the endpoint);
#: 4 added ``segment`` (a box and/or points become the object's mask).
#: 5 added the error code ``unavailable`` (``lama-server --ray``: no replica can take the job).
#: 6 added ``options.resize_limit`` (the size a large window is filled at: speed for detail).
MINOR_VERSION = 6
OPS = ("ping", "info", "inpaint", "cancel", "hello", "segment")
#: Prompt points per ``segment`` request: the one copy is the client's (the plug-ins need it
#: too); lama_model.segment.MAX_POINTS is held equal by a test.
MAX_POINTS = host_kit.MAX_POINTS
#: Messages up to this size are decoded whole before the token check; larger ones must carry
#: ``v``, ``id``, ``op`` and ``token`` before any pixel data (every client does).
SMALL_MESSAGE_BYTES = 65536
#: The gate looks for a small message's envelope (``v``, ``id``, ``op``, ``token``) among at
#: most this many msgpack objects (keys, values and what they hold): a refusal costs a
#: bounded scan, whatever the message's shape, never a decode.
SCAN_OBJECTS = 256
HELLO_MAX_BYTES = 1024  # a hello is tiny; the gate answers it before any token is seen
OUTPUTS = ("composite", "layer")
ERROR_CODES = (
    "bad_request",
    "unauthorized",
    "unsupported_version",
    "unknown_op",
    "too_large",
    "busy",
    "cancelled",
    "out_of_memory",
    "internal",
    "shutting_down",
    "no_pixel_file",
    "no_segmenter",
    "unavailable",
)
MAX_ID_LENGTH = 64
MAX_GROW = 64
#: ``options.resize_limit`` (1.6): the longest side, in pixels, a window is filled at; larger
#: windows are filled scaled down to it and the fill scaled up into the hole. Below 256 LaMa
#: sees too little to continue textures; above 4096 one forward needs many GB.
MIN_RESIZE_LIMIT = 256
MAX_RESIZE_LIMIT = 4096
#: What a request that does not send it gets: the pipeline's own default (its one copy).
DEFAULT_RESIZE_LIMIT = InpaintOptions().resize_limit


class ProtocolError(Exception):
    """A request that gets an error reply; ``request_id`` is echoed when it could be read."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Limits:
    """Explicit limits, reported by ``info`` and enforced before large allocations."""

    max_pixels: int = 40_000_000
    queue: int = 8

    @property
    def max_message_bytes(self) -> int:
        # The largest legal request: RGBAF32 pixels plus the mask plus a little envelope.
        return self.max_pixels * (FORMATS["RGBAF32"].bytes_per_pixel + 1) + 65536

    @property
    def max_queued_bytes(self) -> int:
        # Pixels held by queued jobs (views of received frames): two largest requests' worth.
        return 2 * self.max_message_bytes


@dataclass
class RequestOptions:
    """The ``options`` map of an inpaint request, validated."""

    mask_grow: int = 4
    feather: int = 4
    strategy: str = "auto"
    output: str = "composite"
    refine: bool = False  # high-resolution refinement (sharper, slower)
    resize_limit: int = DEFAULT_RESIZE_LIMIT  # 1.6: larger windows are filled at this size


@dataclass(frozen=True)
class SegmentPrompt:
    """The prompts of a ``segment`` request, in window pixels (validated: finite, inside the
    image, at most :data:`MAX_POINTS` points, labels 1 = object, 0 = background)."""

    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()


@dataclass
class Request:
    """A validated request. ``image`` is set for ``inpaint`` and ``segment``, ``mask`` for
    ``inpaint`` only, ``prompt`` for ``segment`` only."""

    op: str
    id: str
    token: str
    target: str | None = None
    width: int = 0
    height: int = 0
    format: str = ""
    image_data: bytes | memoryview = b""  # a view into the received frame: no copy
    mask_data: bytes | memoryview = b""
    # Pixel files (local clients): where the pixels are, until the server maps them into
    # image_data/mask_data; the result is then written back over ``result_view``.
    image_file: FileRef | None = None
    mask_file: FileRef | None = None
    result_view: memoryview | None = None
    nonce: bytes = b""  # ``hello`` only
    hello_version: int = 1  # ``hello`` only: 2 binds the proof to the connection (1.3)
    options: RequestOptions = field(default_factory=RequestOptions)
    prompt: SegmentPrompt | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height


def decode(
    frame: bytes | memoryview,
    limits: Limits,
    authorized: Callable[[str], bool] = lambda token: True,
) -> Request:
    """Parse and validate one request frame; ``authorized(token)`` runs before any op field.

    Checks run in the documented order: size, msgpack, map, version, id, op, token, op fields.
    A large frame is read only up to its leading scalar fields until the token is accepted;
    ``bin`` fields come back as ``memoryview`` slices of ``frame`` (keep it alive).
    """
    view = memoryview(frame).cast("B")
    if len(view) > limits.max_message_bytes:
        raise ProtocolError("too_large", f"message of {len(view)} bytes exceeds the limit")
    if len(view) > SMALL_MESSAGE_BYTES:
        envelope = _leading_envelope(view)
        _authorize(envelope, authorized)
        msg = _unpack_whole(view)
        if _check_envelope(msg) != envelope:  # a duplicate key later in the map changed it
            raise ProtocolError("bad_request", "duplicate envelope fields", envelope.id)
    else:
        msg = _unpack_whole(view)
        envelope = _check_envelope(msg)
        _authorize(envelope, authorized)
    return _decode_op(msg, envelope, limits)


def screen(
    prefix: bytes | memoryview, size: int, authorized: Callable[[str], bool]
) -> str:
    """The gate's check of a ``size``-byte message from its first bytes (``prefix``).

    Returns the message's op when it may pass: ``hello`` (the gate answers it, no token
    needed) or any op with a valid token (the server answers the rest). Raises the
    :class:`ProtocolError` to answer with otherwise, in the documented order (msgpack, map,
    version, id, op, token). Costs a bounded scan: a small message's fields are looked for
    among :data:`SCAN_OBJECTS` objects, a large one's must lead its map.
    """
    view = memoryview(prefix).cast("B")
    if size > SMALL_MESSAGE_BYTES:
        fields = _leading_scalars(view)
        _leading_envelope(view)  # a large message without its envelope up front: refused
    else:
        fields = _envelope_fields(view, complete=len(view) == size)
    if fields.get("op") == "hello":
        envelope = _check_envelope(fields)
        if size > HELLO_MAX_BYTES:
            raise ProtocolError(
                "bad_request", f"a hello is at most {HELLO_MAX_BYTES} bytes", envelope.id
            )
        return "hello"
    token = fields.get("token")
    if isinstance(token, str) and authorized(token):
        return str(fields.get("op"))
    raise _unauthorized(_check_envelope(fields).id)


def _envelope_fields(view: memoryview, complete: bool) -> dict[str, Any]:
    """A small message's top-level scalar fields, skipping over every other value without
    decoding it, within :data:`SCAN_OBJECTS` objects (later duplicates win, as in a decode)."""
    budget = [SCAN_OBJECTS]
    fields: dict[str, Any] = {}
    try:
        count, pos = _map_header(view)
        for _ in range(count):
            if not 0xA0 <= view[pos] <= 0xDB or 0xC0 <= view[pos] <= 0xD8:
                raise ProtocolError("bad_request", "map keys must be strings")
            key, pos = unpack_from(view, pos, 1)
            if _is_small_scalar(view[pos]):
                _spend(budget, 2)
                fields[key], pos = unpack_from(view, pos, 1)
            else:
                pos = skip_object(view, pos, budget)
            _spend(budget, 1)  # the key
            if _ENVELOPE_KEYS <= fields.keys():
                # The whole envelope within the first SCAN_OBJECTS objects, as documented: the
                # rest (a segment request's 64 points are 200 objects) is the decoder's to
                # read, which checks the token again (a later duplicate wins there).
                return fields
        if complete and pos != len(view):
            raise MsgpackError(f"{len(view) - pos} bytes of trailing data")
    except (MsgpackError, ValueError, IndexError) as exc:
        raise ProtocolError(
            "bad_request", f"not a msgpack message ({type(exc).__name__})"
        ) from None
    return fields


_ENVELOPE_KEYS = frozenset(("v", "id", "op", "token"))


def _map_header(view: memoryview) -> tuple[int, int]:
    """(entries, where the first key starts) of the map ``view`` starts with."""
    b = view[0] if len(view) else -1
    if 0x80 <= b <= 0x8F:
        return b & 0x0F, 1
    if b in (0xDE, 0xDF) and len(view) >= 5:
        return int.from_bytes(view[1:3] if b == 0xDE else view[1:5], "big"), 3 if b == 0xDE else 5
    raise ProtocolError("bad_request", "a request must be a msgpack map")


#: Bytes after the type byte of fixed-size msgpack values, and of the length of sized ones.
_FIXED_BYTES = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4,
                0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}  # fmt: skip
_LENGTH_BYTES = {0xC4: 1, 0xD9: 1, 0xC5: 2, 0xDA: 2, 0xC6: 4, 0xDB: 4, 0xC7: 1, 0xC8: 2, 0xC9: 4}
_COUNT_BYTES = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # (bytes, items per count)


def _spend(budget: list[int], objects: int) -> None:
    budget[0] -= objects
    if budget[0] < 0:
        raise ProtocolError(
            "unauthorized", f"no token among the message's first {SCAN_OBJECTS} msgpack objects"
        )


def skip_object(view: memoryview, pos: int, budget: list[int]) -> int:
    """Where the msgpack object at ``pos`` ends, without decoding it; each object it holds
    costs one of ``budget[0]`` (ProtocolError when spent): O(objects), never O(bytes)."""
    pending = 1
    while pending:
        pending -= 1
        _spend(budget, 1)
        b = view[pos]
        pos += 1
        if 0xA0 <= b <= 0xBF:
            pos += b & 0x1F
        elif 0x90 <= b <= 0x9F:
            pending += b & 0x0F
        elif 0x80 <= b <= 0x8F:
            pending += 2 * (b & 0x0F)
        elif b in _FIXED_BYTES:
            pos += _FIXED_BYTES[b]
        elif b in _LENGTH_BYTES:
            width = _LENGTH_BYTES[b]
            extra = 1 if b >= 0xC7 and b <= 0xC9 else 0  # ext: a type byte after the length
            pos += width + extra + int.from_bytes(view[pos : pos + width], "big")
        elif b in _COUNT_BYTES:
            width, per = _COUNT_BYTES[b]
            pending += per * int.from_bytes(view[pos : pos + width], "big")
            pos += width
        elif b == 0xC1:
            raise MsgpackError("unused type byte 0xc1")
        if pos > len(view):
            raise MsgpackError("truncated data")
    return pos


def _leading_envelope(view: memoryview) -> _Envelope:
    """The envelope of a large message from the scalar fields leading its map.

    Pixel data may only follow ``v``, ``id``, ``op`` and ``token``: the token is checked
    before anything big is parsed.
    """
    head = _leading_scalars(view)
    if not all(k in head for k in ("v", "id", "op", "token")):
        raise ProtocolError(
            "unauthorized",
            "a large message must carry v, id, op and token before any pixel data",
            _readable_id(head),
        )
    return _check_envelope(head)


def _unpack_whole(view: memoryview) -> dict:
    try:
        msg, end = unpack_from(view, 0, 0, False)
        if end != len(view):
            raise MsgpackError(f"{len(view) - end} bytes of trailing data")
    except (MsgpackError, ValueError, IndexError) as exc:
        raise ProtocolError(
            "bad_request", f"not a msgpack message ({type(exc).__name__})"
        ) from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_request", "a request must be a msgpack map")
    if not all(isinstance(k, str) for k in msg):
        raise ProtocolError("bad_request", "map keys must be strings")
    return msg


#: msgpack type bytes of values worth reading before the token: nil, bools, numbers and
#: strings of at most 64 KiB. Anything else (bin, map, array, ext, str32) ends the scan.
def _is_small_scalar(b: int) -> bool:
    return (
        b <= 0x7F or b >= 0xE0 or 0xA0 <= b <= 0xBF or b in (0xC0, 0xC2, 0xC3, 0xD9, 0xDA)
        or 0xCA <= b <= 0xD3
    )  # fmt: skip


def _leading_scalars(view: memoryview) -> dict[str, Any]:
    """The map's leading key/scalar pairs, up to the first non-scalar value: O(header)."""
    b = view[0]
    if 0x80 <= b <= 0x8F:
        count, pos = b & 0x0F, 1
    elif b in (0xDE, 0xDF) and len(view) >= 5:
        count = int.from_bytes(view[1:3] if b == 0xDE else view[1:5], "big")
        pos = 3 if b == 0xDE else 5
    else:
        raise ProtocolError("bad_request", "a request must be a msgpack map")
    head: dict[str, Any] = {}
    try:
        for _ in range(min(count, 64)):
            if not 0xA0 <= view[pos] <= 0xBF:  # keys of interest are short strings
                break
            key, value_pos = unpack_from(view, pos, 1)
            if not _is_small_scalar(view[value_pos]):
                break
            value, pos = unpack_from(view, value_pos, 1)
            head.setdefault(key, value)
    except (MsgpackError, ValueError, IndexError) as exc:
        raise ProtocolError(
            "bad_request", f"not a msgpack message ({type(exc).__name__})"
        ) from None
    return head


def _readable_id(msg: dict) -> str | None:
    rid = msg.get("id")
    return rid if isinstance(rid, str) and 0 < len(rid) <= MAX_ID_LENGTH else None


@dataclass(frozen=True)
class _Envelope:
    version: int
    id: str
    op: str
    token: str


def _unauthorized(request_id: str | None) -> ProtocolError:
    return ProtocolError(
        "unauthorized",
        "missing or wrong token (the client reads it from the server's token file)",
        request_id,
    )


def _authorize(envelope: _Envelope, authorized: Callable[[str], bool]) -> None:
    if envelope.op != "hello" and not authorized(envelope.token):
        raise _unauthorized(envelope.id)


def _check_envelope(msg: dict) -> _Envelope:
    request_id = msg.get("id")
    rid = request_id if isinstance(request_id, str) and len(request_id) <= MAX_ID_LENGTH else None
    version = msg.get("v")
    if version != VERSION or isinstance(version, bool):
        raise ProtocolError(
            "unsupported_version", f"protocol version {version!r} is not supported (use 1)", rid
        )
    if rid is None or not rid:
        raise ProtocolError("bad_request", f"'id' must be a string of 1..{MAX_ID_LENGTH} chars")
    op = msg.get("op")
    if not isinstance(op, str):
        raise ProtocolError("bad_request", "'op' must be a string", rid)
    if op not in OPS:
        raise ProtocolError("unknown_op", f"unknown op {op[:40]!r}; known: {', '.join(OPS)}", rid)
    token = msg.get("token", "")
    if not isinstance(token, str):
        raise ProtocolError("bad_request", "'token' must be a string", rid)
    return _Envelope(version, rid, op, token)


def _decode_op(msg: dict, envelope: _Envelope, limits: Limits) -> Request:
    rid, op = envelope.id, envelope.op
    request = Request(op=op, id=rid, token=envelope.token)
    if op == "hello":
        nonce = msg.get("nonce")
        if not isinstance(nonce, (bytes, memoryview)) or len(nonce) != NONCE_BYTES:
            raise ProtocolError("bad_request", f"'nonce' must be {NONCE_BYTES} bytes (bin)", rid)
        request.nonce = bytes(nonce)
        version = msg.get("hello", 1)
        if version not in (1, 2) or isinstance(version, bool):
            raise ProtocolError("bad_request", "'hello' must be 1 or 2", rid)
        request.hello_version = version
    elif op == "cancel":
        target = msg.get("target")
        if not isinstance(target, str) or not 0 < len(target) <= MAX_ID_LENGTH:
            raise ProtocolError("bad_request", "'target' must be a request id", rid)
        request.target = target
    elif op == "inpaint":
        _decode_inpaint(msg, request, limits)
    elif op == "segment":
        _decode_segment(msg, request, limits)
    return request


def _decode_segment(msg: dict, request: Request, limits: Limits) -> None:
    """A ``segment`` request: the image window (as for inpaint, without a mask) and prompts."""
    rid = request.id
    image = _field(msg, "image", dict, rid)
    w, h, fmt = _image_header(image, limits, rid)
    data = _pixels(image, "image", w * h * FORMATS[fmt].bytes_per_pixel, f"{w}×{h} {fmt}", rid)
    request.width, request.height, request.format = w, h, fmt
    if isinstance(data, FileRef):
        request.image_file = data
    else:
        request.image_data = data
    request.prompt = _decode_prompt(msg, w, h, rid)


def _decode_prompt(msg: dict, w: int, h: int, rid: str) -> SegmentPrompt:
    """``box`` and/or ``points`` with ``labels``: types, finiteness, count, inside the image."""
    box = None
    if msg.get("box") is not None:
        box = _coordinates(msg["box"], 4, "box", rid)
        x0, y0, x1, y1 = box
        if not (x0 < x1 and y0 < y1):
            raise ProtocolError(
                "bad_request", f"box {_fmt(box)} is empty (needs x0 < x1, y0 < y1)", rid
            )
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ProtocolError(
                "bad_request", f"box {_fmt(box)} lies outside the {w}×{h} image", rid
            )
    points = msg.get("points", [])
    labels = msg.get("labels", [])
    if not isinstance(points, list) or not isinstance(labels, list):
        raise ProtocolError("bad_request", "'points' and 'labels' must be arrays", rid)
    if len(points) > MAX_POINTS:
        raise ProtocolError(
            "bad_request", f"{len(points)} points; at most {MAX_POINTS} per request", rid
        )
    if len(labels) != len(points):
        raise ProtocolError(
            "bad_request", f"{len(points)} points need as many labels, not {len(labels)}", rid
        )
    parsed = tuple(_coordinates(p, 2, "points[i]", rid) for p in points)
    for x, y in parsed:
        if not (0 <= x <= w and 0 <= y <= h):
            raise ProtocolError(
                "bad_request", f"point ({x:g}, {y:g}) lies outside the {w}×{h} image", rid
            )
    if any(label not in (0, 1) or isinstance(label, bool) for label in labels):
        raise ProtocolError("bad_request", "'labels' must be 1 (object) or 0 (background)", rid)
    if box is None and not parsed:
        raise ProtocolError("bad_request", "a segment request needs a box or points", rid)
    return SegmentPrompt(box, parsed, tuple(int(label) for label in labels))  # type: ignore[arg-type]


def _coordinates(value: Any, count: int, label: str, rid: str) -> tuple[float, ...]:
    """``count`` finite numbers (ints or floats), as floats."""
    if (
        not isinstance(value, list) or len(value) != count
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):  # fmt: skip
        raise ProtocolError("bad_request", f"'{label}' must be an array of {count} numbers", rid)
    if not all(math.isfinite(v) for v in value):
        raise ProtocolError("bad_request", f"'{label}' must hold finite numbers", rid)
    return tuple(float(v) for v in value)


def _fmt(box: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def _image_header(image: dict, limits: Limits, rid: str) -> tuple[int, int, str]:
    """An image map's size and format, checked against the limits and the known formats."""
    w = _int_field(image, "w", rid, "image.w")
    h = _int_field(image, "h", rid, "image.h")
    if w <= 0 or h <= 0:
        raise ProtocolError("bad_request", f"image size {w}×{h} must be positive", rid)
    if w * h > limits.max_pixels:
        raise ProtocolError(
            "too_large", f"image of {w}×{h} pixels exceeds the server's {limits.max_pixels}", rid
        )
    fmt = _field(image, "format", str, rid, "image.format")
    if fmt not in FORMATS:
        raise ProtocolError(
            "bad_request", f"unknown pixel format {fmt[:20]!r}; known: {', '.join(FORMATS)}", rid
        )
    return w, h, fmt


def _decode_inpaint(msg: dict, request: Request, limits: Limits) -> None:
    rid = request.id
    image = _field(msg, "image", dict, rid)
    mask = _field(msg, "mask", dict, rid)
    w, h, fmt = _image_header(image, limits, rid)
    data = _pixels(image, "image", w * h * FORMATS[fmt].bytes_per_pixel, f"{w}×{h} {fmt}", rid)
    if _int_field(mask, "w", rid, "mask.w") != w or _int_field(mask, "h", rid, "mask.h") != h:
        raise ProtocolError("bad_request", "mask size differs from image size", rid)
    mask_data = _pixels(mask, "mask", w * h, f"{w}×{h}", rid)
    options = msg.get("options", {})
    if not isinstance(options, dict):
        raise ProtocolError("bad_request", "'options' must be a map", rid)
    request.width, request.height, request.format = w, h, fmt
    for name, pixels in (("image", data), ("mask", mask_data)):
        if isinstance(pixels, FileRef):
            setattr(request, f"{name}_file", pixels)
        else:
            setattr(request, f"{name}_data", pixels)
    if (
        request.image_file and request.mask_file
        and request.image_file.name == request.mask_file.name
        and request.image_file.offset < request.mask_file.end
        and request.mask_file.offset < request.image_file.end
    ):  # fmt: skip
        raise ProtocolError("bad_request", "image.file and mask.file overlap", rid)
    request.options = _decode_options(options, rid)
    if request.options.output == "layer" and not FORMATS[fmt].has_alpha:
        raise ProtocolError(
            "bad_request", f"options.output 'layer' needs a format with alpha, not {fmt}", rid
        )


def _pixels(
    container: dict, label: str, expected: int, shape: str, rid: str
) -> bytes | memoryview | FileRef:
    """``data`` (bin) of exactly ``expected`` bytes, or a ``file`` reference to as many."""
    if "file" in container:
        if "data" in container:
            raise ProtocolError("bad_request", f"{label} has both data and file", rid)
        ref = _field(container, "file", dict, rid, f"{label}.file")
        name = _field(ref, "name", str, rid, f"{label}.file.name")
        offset = _int_field(ref, "offset", rid, f"{label}.file.offset")
        if not 0 <= offset <= 1 << 62:
            raise ProtocolError("bad_request", f"{label}.file.offset must be in 0..2**62", rid)
        return FileRef(name, offset, expected)
    data = _field(container, "data", _BINARY, rid, f"{label}.data")
    if len(data) != expected:
        raise ProtocolError(
            "bad_request", f"{label}.data has {len(data)} bytes; {shape} needs {expected}", rid
        )
    return data


def _decode_options(options: dict, rid: str) -> RequestOptions:
    known = {"mask_grow", "feather", "strategy", "output", "refine", "resize_limit"}
    unknown = [str(k)[:20] for k in options if k not in known]
    if unknown:
        raise ProtocolError("bad_request", f"unknown options: {', '.join(unknown)}", rid)
    result = RequestOptions()
    ranges = {"mask_grow": (0, MAX_GROW), "feather": (0, MAX_GROW),
              "resize_limit": (MIN_RESIZE_LIMIT, MAX_RESIZE_LIMIT)}  # fmt: skip
    for name, (low, high) in ranges.items():
        if name in options:
            setattr(result, name, _integer_option(options[name], name, low, high, rid))
    for name, allowed in (("strategy", STRATEGIES), ("output", OUTPUTS)):
        if name in options:
            value = options[name]
            if value not in allowed:
                raise ProtocolError(
                    "bad_request", f"options.{name} must be one of {', '.join(allowed)}", rid
                )
            setattr(result, name, value)
    if "refine" in options:
        if not isinstance(options["refine"], bool):
            raise ProtocolError("bad_request", "options.refine must be true or false", rid)
        result.refine = options["refine"]
    return result


def _integer_option(value: Any, name: str, low: int, high: int, rid: str) -> int:
    """An integer option in ``low..high`` (a float with an integer value counts as one)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(
            "bad_request", f"options.{name} must be an integer in {low}..{high}", rid
        )
    return value


def _field(container: dict, key: str, kind: type, rid: str | None, label: str | None = None):
    value = container.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(
            "bad_request", f"'{label or key}' must be a {_KIND_NAMES.get(kind, 'value')}", rid
        )
    return value


def _int_field(container: dict, key: str, rid: str | None, label: str) -> int:
    return _field(container, key, int, rid, label)


_BINARY = (bytes, memoryview)
_KIND_NAMES = {dict: "map", _BINARY: "binary (bin)", str: "string", int: "integer"}


def encode(message: dict[str, Any]) -> bytes:
    """Encode a reply."""
    return msgpack.packb({"v": VERSION, **message}, use_bin_type=True)


def error_reply(code: str, message: str, request_id: str | None) -> bytes:
    return encode({"id": request_id, "ok": False, "error": {"code": code, "message": message}})


def progress_reply(request_id: str, fraction: float, stage: str) -> bytes:
    return encode({"id": request_id, "progress": round(float(fraction), 4), "stage": stage})
