"""``lama-inpaint IMAGE --box X,Y,W,H`` / ``--points``: the object's mask instead of a mask file.

The prompts are read and checked against the image's size before any model loads; the mask
comes from the segmenter (locally, or from a lama-server's ``segment``) and is grown by the
plug-ins' rule (:func:`lama_client.host_kit.grow_mask`), so the command removes what
"Select object first" removes in Krita and GIMP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lama_client import host_kit
from lama_server.wire.pixel_formats import array_to_wire, format_for_array, rgb8
from lama_server.wire.protocol import MAX_POINTS


class PromptInputError(ValueError):
    """A prompt that cannot be used (one line; the command exits with its usage code)."""


class SegmentFailed(RuntimeError):
    """The segmenter or the server failed (one line)."""


@dataclass(frozen=True)
class Prompt:
    """What the user pointed at, in image pixels (as displayed, EXIF orientation applied)."""

    box: tuple[float, float, float, float] | None  # x0, y0, x1, y1
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()


def _numbers(text: str, what: str, counts: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts or not all(math.isfinite(v) for v in values):
        raise PromptInputError(f"{what} {text!r}: expected {' or '.join(map(str, counts))} "
                               "comma-separated numbers")  # fmt: skip
    return values


def parse_prompt(box: str | None, points: str | None) -> Prompt:
    """``--box X,Y,W,H`` and ``--points X,Y[,LABEL];...`` (label 1 = object, the default,
    0 = background) as a :class:`Prompt`."""
    corners = None
    if box is not None:
        x, y, w, h = _numbers(box, "--box", (4,))
        if w <= 0 or h <= 0:
            raise PromptInputError(f"--box {box!r}: width and height must be positive")
        corners = (x, y, x + w, y + h)
    parsed, labels = [], []
    for item in (points or "").split(";"):
        if not item.strip():
            continue
        values = _numbers(item.strip(), "--points item", (2, 3))
        label = 1 if len(values) == 2 else values[2]
        if label not in (0, 1):
            raise PromptInputError(f"--points item {item.strip()!r}: the label must be 1 or 0")
        parsed.append((values[0], values[1]))
        labels.append(int(label))
    if len(parsed) > MAX_POINTS:
        raise PromptInputError(f"--points: {len(parsed)} points; at most {MAX_POINTS}")
    if corners is None and not parsed:
        raise PromptInputError("--box or --points must name at least one box or point")
    return Prompt(corners, tuple(parsed), tuple(labels))


def check_inside(prompt: Prompt, width: int, height: int) -> None:
    """Refuse a box or point outside the ``width``×``height`` image, in one line."""
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise PromptInputError(
                f"--box ({x0:g}, {y0:g}) to ({x1:g}, {y1:g}) lies outside the "
                f"{width}×{height} image"
            )
    for x, y in prompt.points:
        if not (0 <= x <= width and 0 <= y <= height):
            raise PromptInputError(f"point ({x:g}, {y:g}) lies outside the {width}×{height} image")


def segment_locally(image: np.ndarray, prompt: Prompt, model: str, device: str) -> np.ndarray:
    """The object's mask (bool ``H×W``) from ``lama_model.load_segmenter(model, device)``."""
    from lama_model import load_segmenter
    from lama_model.errors import PromptError, WeightsError, one_line

    try:
        segmenter = load_segmenter(model, device)
        embedding = segmenter.embed(rgb8(image))
        points = np.asarray(prompt.points, np.float32) if prompt.points else None
        labels = np.asarray(prompt.labels, np.int64) if prompt.points else None
        return segmenter.predict(embedding, box=prompt.box, points=points, labels=labels)
    except PromptError as exc:
        raise PromptInputError(one_line(exc)) from exc
    except (WeightsError, OSError, ValueError) as exc:
        raise SegmentFailed(f"segmenter {model}: {one_line(exc)}") from exc


def segment_on_server(image: np.ndarray, prompt: Prompt, endpoint: str) -> np.ndarray:
    """The object's mask (bool ``H×W``) from a lama-server's ``segment``."""
    from lama_client.client import ImageData, LamaClient
    from lama_client.errors import LamaError

    fmt = format_for_array(image)
    h, w = image.shape[:2]
    try:
        with LamaClient(endpoint) as client:
            mask = client.segment(ImageData(w, h, fmt, array_to_wire(fmt, image)),
                                  box=prompt.box, points=prompt.points, labels=prompt.labels)
    except LamaError as exc:
        if exc.code == "bad_request":
            raise PromptInputError(f"server {endpoint}: {exc.message}") from exc
        raise SegmentFailed(f"server {endpoint}: {exc.message}") from exc
    return np.frombuffer(mask, np.uint8).reshape(h, w) > 127


def grown_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` (bool) grown by ``pixels`` as the plug-ins grow a selected object, as 0/255."""
    h, w = mask.shape
    grown = host_kit.grow_mask((mask.astype(np.uint8) * 255).tobytes(), w, h, pixels)
    return np.frombuffer(grown, np.uint8).reshape(h, w).copy()
