"""Wire protocol v1: message schema, validation, replies (see ``docs/protocol.md``).

Every field of a request is checked here, before anything large is allocated; a bad message
becomes a :class:`ProtocolError` with a code from :data:`ERROR_CODES`, which the transport turns
into an error reply. Nothing here touches sockets or the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .pixel_formats import FORMATS

VERSION = 1
OPS = ("ping", "info", "inpaint", "cancel")
STRATEGIES = ("auto", "crop", "resize", "original")
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
)
MAX_ID_LENGTH = 64
MAX_GROW = 64


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


@dataclass
class InpaintOptions:
    """The ``options`` map of an inpaint request, validated."""

    mask_grow: int = 4
    feather: int = 4
    strategy: str = "auto"
    output: str = "composite"
    refine: bool = False  # high-resolution refinement (sharper, slower)


@dataclass
class Request:
    """A validated request. ``image``/``mask`` are only set for ``inpaint``."""

    op: str
    id: str
    token: str
    target: str | None = None
    width: int = 0
    height: int = 0
    format: str = ""
    image_data: bytes = b""
    mask_data: bytes = b""
    options: InpaintOptions = field(default_factory=InpaintOptions)

    @property
    def pixels(self) -> int:
        return self.width * self.height


def decode(frame: bytes, limits: Limits) -> Request:
    """Parse and validate one request frame."""
    if len(frame) > limits.max_message_bytes:
        raise ProtocolError("too_large", f"message of {len(frame)} bytes exceeds the limit")
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True, max_bin_len=len(frame))
    except Exception as exc:  # msgpack raises several types for garbage
        raise ProtocolError(
            "bad_request", f"not a msgpack message ({type(exc).__name__})"
        ) from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_request", "a request must be a msgpack map")
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
    request = Request(op=op, id=rid, token=token)
    if op == "cancel":
        target = msg.get("target")
        if not isinstance(target, str) or not 0 < len(target) <= MAX_ID_LENGTH:
            raise ProtocolError("bad_request", "'target' must be a request id", rid)
        request.target = target
    elif op == "inpaint":
        _decode_inpaint(msg, request, limits)
    return request


def _decode_inpaint(msg: dict, request: Request, limits: Limits) -> None:
    rid = request.id
    image = _field(msg, "image", dict, rid)
    mask = _field(msg, "mask", dict, rid)
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
    data = _field(image, "data", bytes, rid, "image.data")
    expected = w * h * FORMATS[fmt].bytes_per_pixel
    if len(data) != expected:
        raise ProtocolError(
            "bad_request", f"image.data has {len(data)} bytes; {w}×{h} {fmt} needs {expected}", rid
        )
    if _int_field(mask, "w", rid, "mask.w") != w or _int_field(mask, "h", rid, "mask.h") != h:
        raise ProtocolError("bad_request", "mask size differs from image size", rid)
    mask_data = _field(mask, "data", bytes, rid, "mask.data")
    if len(mask_data) != w * h:
        raise ProtocolError(
            "bad_request", f"mask.data has {len(mask_data)} bytes; {w}×{h} needs {w * h}", rid
        )
    options = msg.get("options", {})
    if not isinstance(options, dict):
        raise ProtocolError("bad_request", "'options' must be a map", rid)
    request.width, request.height, request.format = w, h, fmt
    request.image_data, request.mask_data = data, mask_data
    request.options = _decode_options(options, rid)
    if request.options.output == "layer" and not FORMATS[fmt].has_alpha:
        raise ProtocolError(
            "bad_request", f"options.output 'layer' needs a format with alpha, not {fmt}", rid
        )


def _decode_options(options: dict, rid: str) -> InpaintOptions:
    known = {"mask_grow", "feather", "strategy", "output", "refine"}
    unknown = [str(k)[:20] for k in options if k not in known]
    if unknown:
        raise ProtocolError("bad_request", f"unknown options: {', '.join(unknown)}", rid)
    result = InpaintOptions()
    for name in ("mask_grow", "feather"):
        if name in options:
            value = options[name]
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_GROW:
                raise ProtocolError(
                    "bad_request", f"options.{name} must be an integer in 0..{MAX_GROW}", rid
                )
            setattr(result, name, value)
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


def _field(container: dict, key: str, kind: type, rid: str | None, label: str | None = None):
    value = container.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(
            "bad_request", f"'{label or key}' must be a {_KIND_NAMES.get(kind, kind.__name__)}", rid
        )
    return value


def _int_field(container: dict, key: str, rid: str | None, label: str) -> int:
    return _field(container, key, int, rid, label)


_KIND_NAMES = {dict: "map", bytes: "binary (bin)", str: "string", int: "integer"}


def encode(message: dict[str, Any]) -> bytes:
    """Encode a reply."""
    return msgpack.packb({"v": VERSION, **message}, use_bin_type=True)


def error_reply(code: str, message: str, request_id: str | None) -> bytes:
    return encode({"id": request_id, "ok": False, "error": {"code": code, "message": message}})


def progress_reply(request_id: str, fraction: float, stage: str) -> bytes:
    return encode({"id": request_id, "progress": round(float(fraction), 4), "stage": stage})
