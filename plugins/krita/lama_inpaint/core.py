"""Host-neutral core of the Krita plugin: what to send, what to do with the answer.

Works on duck-typed document/node objects with Krita's API names (``selection()``,
``pixelData()``, ``createNode()``…), so tests drive it with fake host objects and Krita drives
it with the real ones. No Qt, no numpy, no third-party imports: this runs in Krita's Python.
The rules GIMP's plug-in shares (the context window, the words for an error) live in the
bundled client's :mod:`host_kit`; this module adapts them to Krita's rectangles and boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import lama_client  # bundled beside this module by `lama-server install-plugin krita`

LAYER_NAME = "LaMa: removed"
#: A paint layer of this name holds extra prompts for Select object: each painted dot is a
#: point on the object, a red dot a point on the background.
POINTS_LAYER = "lama points"
SETTINGS_GROUP = "lama_inpaint"
REFINE_TIMEOUT_S = 3600.0  # a refinement may run for many minutes on a CPU server

# Krita stores 8- and 16-bit integer RGBA as BGRA in memory, floats as RGBA.
WIRE_FORMATS = {("RGBA", "U8"): "BGRA8", ("RGBA", "U16"): "BGRA16", ("RGBA", "F32"): "RGBAF32"}


class PluginError(Exception):
    """Something to tell the user in a message box (never a traceback)."""

    def __init__(self, title: str, text: str) -> None:
        super().__init__(text)
        self.title = title
        self.text = text


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0


@dataclass
class Settings:
    """User settings, stored in Krita's configuration under [lama_inpaint]."""

    endpoint: str = "tcp://127.0.0.1:5557"
    mask_grow: int = 4
    feather: int = 4
    margin: int = 0  # 0 = automatic: max(128 px, half the selection's size)
    visible: bool = False  # read the visible image instead of the active layer
    refine: bool = False  # high-resolution refinement on the server: sharper, slower
    select_first: bool = False  # Remove object: select the object in the selection first
    # The size large windows are filled at (host_kit.PROCESSING_SIZES): speed for detail.
    processing_size: str = lama_client.host_kit.DEFAULT_PROCESSING_SIZE

    @classmethod
    def load(cls, read) -> Settings:
        """``read(key, default_text) -> text``; bad stored values fall back to defaults."""
        base = cls()

        def number(key: str, default: int, high: int) -> int:
            try:
                value = int(read(key, str(default)))
            except (TypeError, ValueError):
                return default
            return value if 0 <= value <= high else default

        endpoint = (read("endpoint", base.endpoint) or base.endpoint).strip()
        return cls(
            endpoint=endpoint if endpoint.startswith(("tcp://", "ipc://")) else base.endpoint,
            mask_grow=number("mask_grow", base.mask_grow, 64),
            feather=number("feather", base.feather, 64),
            margin=number("margin", base.margin, 4096),
            visible=str(read("visible", "false")).lower() == "true",
            refine=str(read("refine", "false")).lower() == "true",
            select_first=str(read("select_first", "false")).lower() == "true",
            processing_size=lama_client.host_kit.processing_size(
                str(read("processing_size", base.processing_size))
            ).key,
        )

    def save(self, write) -> None:
        """``write(key, text)``."""
        write("endpoint", self.endpoint)
        write("mask_grow", str(self.mask_grow))
        write("feather", str(self.feather))
        write("margin", str(self.margin))
        write("visible", "true" if self.visible else "false")
        write("refine", "true" if self.refine else "false")
        write("select_first", "true" if self.select_first else "false")
        write("processing_size", self.processing_size)

    def client_options(self) -> dict:
        """Keyword arguments for ``LamaClient``: refinement may run for many minutes on a CPU."""
        return {"timeout": REFINE_TIMEOUT_S} if self.refine else {}

    def request_options(self) -> dict:
        options = {"mask_grow": self.mask_grow, "feather": self.feather, "output": "layer"}
        if self.refine:  # only sent when on: servers without refinement reject the key
            options["refine"] = True
        limit = lama_client.host_kit.processing_size(self.processing_size).resize_limit
        if limit is not None:  # only sent when not the default: servers before 1.6 reject it
            options["resize_limit"] = limit
        return options


def context_window(selection: Rect, bounds: Rect, margin: int = 0) -> Rect:
    """The selection's box grown by the context margin, clamped to ``bounds``
    (:func:`host_kit.context_window`, in Krita's x, y, width, height)."""
    x0, y0, x1, y1 = lama_client.host_kit.context_window(_corners(selection), _corners(bounds),
                                                         margin)  # fmt: skip
    return Rect(x0, y0, x1 - x0, y1 - y0)


def _corners(rect: Rect) -> tuple[int, int, int, int]:
    return rect.x, rect.y, rect.x + rect.w, rect.y + rect.h


def wire_format(color_model: str, color_depth: str) -> str:
    """The protocol's pixel format for a Krita colour space, or a PluginError."""
    try:
        return WIRE_FORMATS[(color_model, color_depth)]
    except KeyError:
        pass
    if color_model == "RGBA" and color_depth == "F16":
        hint = "Convert it to 32-bit float or 16-bit integer RGBA"
    else:
        hint = "Convert it to RGB/Alpha"
    raise PluginError(
        "Unsupported colour space",
        f"LaMa works on RGBA images; this layer is {color_model} {color_depth}.\n"
        f"{hint} (Image › Convert Image Color Space…), or use it on a copy.",
    )


@dataclass
class Job:
    """Everything a request needs, read from the document on the UI thread."""

    window: Rect
    format: str
    pixels: bytes
    mask: bytes
    options: dict
    points: tuple = ()  # Select object's extra prompts, in window pixels (POINTS_LAYER)
    labels: tuple = ()  # 1 on the object, 0 on the background, one per point


def prepare(doc, node, settings: Settings) -> Job:
    """Read the pixels and the selection mask around the selection."""
    if doc is None:
        raise PluginError("No image", "Open an image first.")
    selection = doc.selection()
    if selection is None or selection.width() <= 0 or selection.height() <= 0:
        raise PluginError(
            "Nothing selected",
            "Select the object to remove first (any selection tool works), "
            "then run Tools › Scripts › Remove object.",
        )
    if not settings.visible and (node is None or node.type() != "paintlayer"):
        raise PluginError(
            "Not a paint layer",
            "Select a paint layer to remove the object from, or switch the LaMa settings "
            "to use the visible image.",
        )
    source = doc if settings.visible else node
    fmt = wire_format(source.colorModel(), source.colorDepth())
    sel = Rect(selection.x(), selection.y(), selection.width(), selection.height())
    bounds = Rect(0, 0, doc.width(), doc.height())
    window = context_window(sel, bounds, settings.margin)
    if window.empty:
        raise PluginError("Nothing selected", "The selection lies outside the image.")
    pixels = bytes(source.pixelData(window.x, window.y, window.w, window.h))
    mask = bytes(selection.pixelData(window.x, window.y, window.w, window.h))
    if not any(mask):
        raise PluginError("Nothing selected", "The selection is empty.")
    points, labels = painted_points(doc.nodeByName(POINTS_LAYER), window)
    return Job(window, fmt, pixels, mask, settings.request_options(), points, labels)


#: Where a pixel's alpha (high byte) and red/green (high bytes) lie in Krita's BGRA layouts.
_DOT_BYTES = {"U8": (4, 3, 2, 1), "U16": (8, 7, 5, 3)}


def painted_points(layer, window: Rect) -> tuple[tuple, tuple]:
    """The dots painted on ``layer`` (None: no such layer) inside ``window``: the centre of
    each connected opaque blob, in window pixels, labelled 0 if it is red (background), else
    1 (object). At most ``host_kit.MAX_POINTS`` dots (the protocol's limit)."""
    if layer is None or layer.type() != "paintlayer":
        return (), ()
    layout = _DOT_BYTES.get(layer.colorDepth())
    if layer.colorModel() != "RGBA" or layout is None:
        raise PluginError("Unsupported points layer",
                          f"Paint the dots of the '{POINTS_LAYER}' layer on an 8- or 16-bit "
                          "RGBA layer.")  # fmt: skip
    bpp, alpha, red, green = layout
    data = bytes(layer.pixelData(window.x, window.y, window.w, window.h))
    opaque = {i for i, a in enumerate(data[alpha::bpp]) if a > 127}
    points, labels = [], []
    for blob in _blobs(opaque, window.w):
        reds = sum(1 for i in blob if data[i * bpp + red] > 2 * data[i * bpp + green] + 32)
        points.append((sum(i % window.w for i in blob) / len(blob) + 0.5,
                       sum(i // window.w for i in blob) / len(blob) + 0.5))  # fmt: skip
        labels.append(0 if 2 * reds > len(blob) else 1)
    # Top to bottom, left to right: the same dots always make the same request.
    order = sorted(range(len(points)), key=lambda k: (points[k][1], points[k][0]))
    points, labels = [points[k] for k in order], [labels[k] for k in order]
    if len(points) > lama_client.host_kit.MAX_POINTS:
        raise PluginError("Too many points",
                          f"The '{POINTS_LAYER}' layer has {len(points)} dots here; at most "
                          f"{lama_client.host_kit.MAX_POINTS}.")  # fmt: skip
    return tuple(points), tuple(labels)


def _blobs(opaque: set, width: int) -> list[list[int]]:
    """The 4-connected groups of the pixel indices ``opaque`` (row-major, ``width`` wide);
    consumes the set."""
    blobs = []
    while opaque:
        blob, todo = [], [opaque.pop()]
        while todo:
            i = todo.pop()
            blob.append(i)
            x = i % width
            left = i - 1 if x > 0 else -1
            right = i + 1 if x + 1 < width else -1
            for j in (i - width, i + width, left, right):
                if j in opaque:
                    opaque.remove(j)
                    todo.append(j)
        blobs.append(blob)
    return blobs


def apply_result(doc, node, job: Job, data: bytes):
    """Add the filled pixels as a new paint layer directly above ``node``."""
    layer = doc.createNode(LAYER_NAME, "paintlayer")
    source = node if node is not None and node.type() == "paintlayer" else doc
    # Same colour space as the pixels we read, so the bytes mean the same thing.
    layer.setColorSpace(source.colorModel(), source.colorDepth(), source.colorProfile())
    parent = node.parentNode() if node is not None else doc.rootNode()
    parent.addChildNode(layer, node)
    w = job.window
    layer.setPixelData(data, w.x, w.y, w.w, w.h)
    return layer


def object_mask(client, job: Job, grow: int, progress=None, cancel=None) -> bytes:
    """The mask of the object inside the job's selection: the selection's box is the prompt
    of the server's ``segment``, and the answer is grown by ``grow`` pixels (the same rule
    the server grows an inpaint mask by), one byte per window pixel, 0 or 255.

    Select object passes the grow setting; Remove object with "Select object first" passes 0,
    because its inpaint request already asks the server to grow the mask by that setting."""
    w, h = job.window.w, job.window.h
    box = lama_client.host_kit.mask_box(job.mask, w, h)
    if box is None:
        raise PluginError("Nothing selected", "The selection is empty.")
    image = lama_client.ImageData(w, h, job.format, job.pixels)
    mask = client.segment(image, box=box, points=job.points, labels=job.labels,
                          progress=progress, cancel=cancel)
    if not any(mask):
        raise PluginError(
            "No object found",
            "The server found no object in the selection. Draw the selection a little larger "
            "around the object, or select it by hand.",
        )
    return lama_client.host_kit.grow_mask(mask, w, h, grow)


def apply_selection(doc, job: Job, mask: bytes, new_selection) -> None:
    """Replace the document's selection with ``mask`` (a window's bytes). ``new_selection()``
    makes an empty ``krita.Selection``. Krita's scripting API sets selections outside the undo
    stack, so Ctrl+Z does not bring the old selection back (Select › Reselect does not
    either); the README says so."""
    selection = new_selection()
    w = job.window
    selection.setPixelData(mask, w.x, w.y, w.w, w.h)
    doc.setSelection(selection)


def explain(error: Exception) -> PluginError:
    """A message box for a client error."""
    explanation = lama_client.host_kit.explain(error, "Krita")
    return PluginError(explanation.title, explanation.text)
