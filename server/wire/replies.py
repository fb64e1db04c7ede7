"""The final reply of an ``inpaint`` (and a ``segment``) request, as the bytes on the wire.

The worker hands over what the model made (a :class:`RegionResult`, or a whole
:class:`InpaintResult`); this module puts it in the request's pixel format and output
(``composite`` or ``layer``), inline or into the request's pixel file, and encodes the message
(``docs/protocol.md``). Integer composites take a short cut: the request's own pixels with the
filled region patched in, so the untouched pixels are copied once and never converted.
"""

from __future__ import annotations

import numpy as np

from lama_model.pipeline.options import InpaintResult, RegionResult
from lama_server.wire import protocol
from lama_server.wire.pixel_formats import CANONICAL_ORDER, FORMATS, array_to_wire
from lama_server.wire.protocol import Request


def ok_reply(
    req: Request, result: RegionResult | InpaintResult, queue_ms: float, model_ms: float
) -> bytes | bytearray:
    """The final ``ok`` reply of an inpaint request: the answer inline, or written into the
    request's pixel file and named; ``timing`` from the queue and model milliseconds."""
    timing = {"queue_ms": round(queue_ms, 1), "model_ms": round(model_ms, 1),
              "total_ms": round(queue_ms + model_ms, 1)}  # fmt: skip
    fmt = FORMATS[req.format]
    patchable = req.options.output == "composite" and fmt.dtype.kind != "f"
    if req.result_view is not None:  # a pixel file: the answer goes back where the image was
        if isinstance(result, RegionResult) and patchable:
            _patch_region(req.result_view, req, result)  # the file holds the request's pixels
        else:
            req.result_view[:] = _wire_pixels(req, result)
        ref = req.image_file
        image_reply = {"w": req.width, "h": req.height, "format": req.format,
                       "file": {"name": ref.name, "offset": ref.offset}}  # fmt: skip
        return protocol.encode({"id": req.id, "ok": True, "image": image_reply, "timing": timing})
    if isinstance(result, RegionResult) and patchable:
        return _patched_reply(req, result, timing)
    image_reply = {"w": req.width, "h": req.height, "format": req.format,
                   "data": _wire_pixels(req, result)}  # fmt: skip
    return protocol.encode({"id": req.id, "ok": True, "image": image_reply, "timing": timing})


def segment_reply(
    req: Request, mask: np.ndarray, queue_ms: float, model_ms: float, cached: bool
) -> bytes:
    """The final ``ok`` reply of a segment request: the mask (one byte per pixel, 0 or 255),
    its bounding box (None when empty), and ``timing`` with whether the window's embedding
    was cached (then the request cost only the decoder)."""
    timing = {"queue_ms": round(queue_ms, 1), "model_ms": round(model_ms, 1),
              "total_ms": round(queue_ms + model_ms, 1), "embedding_cached": cached}  # fmt: skip
    on = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    box = None
    if rows.size:
        box = [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]
    data = (on.astype(np.uint8) * 255).tobytes()
    return protocol.encode({"id": req.id, "ok": True, "timing": timing, "box": box,
                            "mask": {"w": req.width, "h": req.height, "data": data}})  # fmt: skip


def _wire_pixels(req: Request, result) -> bytes:
    """The whole answer in the request's format."""
    if isinstance(result, RegionResult):
        result = result.full()
    out = (
        layer_pixels(result.image, result.alpha, req.format)
        if req.options.output == "layer"
        else result.image
    )
    return array_to_wire(req.format, out)


def _patched_reply(req: Request, result: RegionResult, timing: dict) -> bytearray:
    """The ok reply built in one buffer: the request's pixels copied once, the region patched.

    Decodes to the same message as ``protocol.encode`` of the whole image (the pixels are
    the message's last field, so the encoding is the head of the message, a ``bin 32``
    header, the pixels) but without the full-image copies of compositing into a copy,
    ``tobytes`` and packing.
    Integer formats only (float documents get NaN cleaned on the way in, so their untouched
    pixels differ from the request's bytes).
    """
    image_reply = {"w": req.width, "h": req.height, "format": req.format, "data": b""}
    head = protocol.encode({"id": req.id, "ok": True, "timing": timing, "image": image_reply})
    empty_bin = b"\xc4\x00"
    assert head.endswith(empty_bin), "the pixels must be the last field of the reply"
    head = head[: -len(empty_bin)]
    size = len(req.image_data)
    buf = bytearray(len(head) + 5 + size)
    buf[: len(head)] = head
    buf[len(head) : len(head) + 5] = b"\xc6" + size.to_bytes(4, "big")
    pixels = memoryview(buf)[len(head) + 5 :]
    pixels[:] = req.image_data
    _patch_region(pixels, req, result)
    return buf


def _patch_region(pixels: memoryview, req: Request, result: RegionResult) -> None:
    """Write the filled region into ``pixels``, which hold the request's image."""
    if result.box is None or result.pixels is None:
        return
    fmt = FORMATS[req.format]
    wire = np.frombuffer(pixels, dtype=fmt.dtype).reshape(req.height, req.width, -1)
    canonical = CANONICAL_ORDER[fmt.order]
    region = result.pixels
    if fmt.order != canonical:
        region = region[:, :, [canonical.index(c) for c in fmt.order]]
    wire[result.box.slices] = region


def layer_pixels(result: np.ndarray, alpha: np.ndarray, fmt_name: str) -> np.ndarray:
    """Only the filled pixels: colour from the result, alpha = weight × source alpha."""
    fmt = FORMATS[fmt_name]
    full = 1.0 if fmt.dtype.kind == "f" else float(np.iinfo(fmt.dtype).max)
    layer = result.copy()
    a_index = result.shape[2] - 1  # alpha is last in canonical order (RGBA / YA)
    source_alpha = result[:, :, a_index].astype(np.float32)
    new_alpha = alpha * source_alpha
    if fmt.dtype.kind == "f":
        layer[:, :, a_index] = new_alpha
    else:
        layer[:, :, a_index] = np.clip(np.rint(new_alpha), 0, full).astype(result.dtype)
    layer[alpha == 0] = 0
    return layer
