"""What the Krita and GIMP plug-ins share: the context window, the processing sizes, the
object selection's mask rules (its box, its growth) and the words for an error.

One copy of each rule, in the package that ``lama-server install-plugin`` bundles into both
plug-ins; each host only adapts it to its own types (Krita's rectangles, GIMP's message line).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ClusterUnavailable

#: The least context around a selection when the margin is automatic (0), in pixels.
MIN_AUTO_MARGIN = 128

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: the corners, x1 and y1 excluded


def context_window(selection: Box, bounds: Box, margin: int = 0) -> Box:
    """The selection's box grown by the context margin, clamped to ``bounds``.

    ``margin`` 0 means automatic: half the selection's longer side, at least
    :data:`MIN_AUTO_MARGIN`, so LaMa sees enough of the surroundings to continue them.
    The result is empty (x1 <= x0 or y1 <= y0) when the selection lies outside ``bounds``.
    """
    x0, y0, x1, y1 = selection
    if margin <= 0:
        margin = max(MIN_AUTO_MARGIN, max(x1 - x0, y1 - y0) // 2)
    bx0, by0, bx1, by1 = bounds
    return (max(bx0, x0 - margin), max(by0, y0 - margin),
            min(bx1, x1 + margin), min(by1, y1 + margin))  # fmt: skip


@dataclass(frozen=True)
class ProcessingSize:
    """A choice of the plug-ins' "Processing size" setting.

    ``key``: how the setting is stored (Krita's configuration, GIMP's choice argument);
    ``label``: what the user reads; ``resize_limit``: what the inpaint request sends (protocol
    1.6), or None to send nothing and get the server's default, which keeps servers older than
    1.6 working for users who never change the setting.
    """

    key: str
    label: str
    resize_limit: int | None


#: The server's default ``resize_limit`` (``lama_model.pipeline.InpaintOptions``; a test holds
#: the two equal): "Full" promises it to the user.
SERVER_RESIZE_LIMIT = 1024
PROCESSING_SIZES = (
    ProcessingSize("full", f"Full (up to {SERVER_RESIZE_LIMIT} px)", None),
    ProcessingSize("faster", "Faster (768 px)", 768),
    ProcessingSize("fastest", "Fastest (512 px)", 512),
)
DEFAULT_PROCESSING_SIZE = PROCESSING_SIZES[0].key
PROCESSING_SIZE_LABEL = "Processing size"
PROCESSING_SIZE_HELP = (
    "Large selections are filled at this size (the longest side of the area LaMa works on) "
    "and the fill is scaled up into the hole: a smaller size is faster, since the time grows "
    "with the pixels filled, but large fills come out softer. An area that fits within the "
    "size is filled at full resolution anyway; pixels outside the selection never change. "
    "Refine works at its own size."
)


def processing_size(key: str) -> ProcessingSize:
    """The processing size stored as ``key``; an unknown key (an edited or future setting)
    is the default."""
    for size in PROCESSING_SIZES:
        if size.key == key:
            return size
    return PROCESSING_SIZES[0]


#: Prompt points one ``segment`` request may carry (protocol 1.4): SAM's own guidance uses a
#: handful, and the limit keeps a request's decoder work bounded. The protocol checks it
#: (``lama_server.wire.protocol``), and a test holds the segmenter's limit to it.
MAX_POINTS = 64

#: A mask byte above this is selected: the same rule as the server's inpaint mask (> 127).
MASK_THRESHOLD = 127
_BINARY = bytes(0 if v <= MASK_THRESHOLD else 255 for v in range(256))


def mask_box(mask: bytes, width: int, height: int) -> Box | None:
    """The box (x0, y0, x1 excluded, y1 excluded) of a mask's selected bytes, or None if it
    selects nothing: the prompt "Select object" sends for a selection."""
    binary = mask.translate(_BINARY)
    x0, y0, x1, y1 = width, height, 0, 0
    for y in range(height):
        row = binary[y * width : (y + 1) * width]
        left = row.find(255)
        if left < 0:
            continue
        y0, y1 = min(y0, y), y + 1
        x0, x1 = min(x0, left), max(x1, row.rfind(255) + 1)
    return (x0, y0, x1, y1) if x1 > x0 else None


def grow_mask(mask: bytes, width: int, height: int, pixels: int) -> bytes:
    """The mask (bytes > 127 selected) grown by ``pixels`` in every direction, as 0/255
    bytes: the server's rule for growing an inpaint mask (steps alternate a 3×3 square and a
    cross, an octagon close to a disc; ``lama_model.geometry.ring_distance``, which a test
    holds this to).

    Standard library only (Krita's and GIMP's Python have no NumPy): the mask becomes one
    big integer, a byte per pixel, each row padded with a zero byte so that a shift never
    carries a row's pixel into the next row; a step costs a few whole-mask operations.
    """
    binary = mask.translate(_BINARY)
    if pixels <= 0 or not any(binary):
        return binary
    stride = width + 1
    padded = b"".join(binary[y * width : (y + 1) * width] + b"\0" for y in range(height))
    nbits = 8 * len(padded)
    everything = (1 << nbits) - 1
    in_rows = int.from_bytes((b"\xff" * width + b"\0") * height, "big")
    bits = int.from_bytes(padded, "big")

    def shifted(value: int, pixels_apart: int) -> int:
        return ((value << 8 * pixels_apart) & everything) | (value >> 8 * pixels_apart)

    for step in range(1, pixels + 1):
        across = (bits | shifted(bits, 1)) & in_rows  # left and right neighbours
        if step % 2:  # the 3×3 square: the row-grown mask, also moved up and down
            bits = across | shifted(across, stride)
        else:  # the cross
            bits = across | shifted(bits, stride)
    grown = bits.to_bytes(len(padded), "big")
    return b"".join(grown[y * stride : y * stride + width] for y in range(height))


@dataclass(frozen=True)
class Explanation:
    """A client error in the user's words: a title and what to do, for a message box."""

    title: str
    text: str

    def one_line(self) -> str:
        """Title and text on one line, for hosts that show a status message (GIMP)."""
        return f"{self.title}: {' '.join(self.text.split())}"


def explain(error: Exception, host: str) -> Explanation:
    """What to tell the user of ``host`` (``"Krita"``, ``"GIMP"``) about a client error."""
    code = getattr(error, "code", "")
    message = getattr(error, "message", str(error))
    if isinstance(error, ClusterUnavailable):
        # The server answered: its Ray cluster (lama-server --ray) has no replica for the job.
        return Explanation(
            "LaMa server's cluster is unavailable", f"{message}\nTry again in a moment."
        )
    if code == "unavailable":
        message = message.split(". Start it with")[0].rstrip(".") + "."
        how = (
            "Start it in a terminal with:\n\n    lama-server\n\n"
            "(once: pip install lama-inpaint; see the plugin's manual)."
        )
        return Explanation("LaMa server is not running", f"{message}\n\n{how}")
    if code == "timeout":
        return Explanation(
            "LaMa server timed out",
            f"{message}\nThe server may be busy or the selection very large; try again.",
        )
    if code == "busy":
        return Explanation("LaMa server is busy", "Other requests are waiting. Try again shortly.")
    if code == "unauthorized":
        return Explanation(
            "LaMa server refused the request",
            f"{message}\nThe token file of the server and of {host}'s user must be the same.",
        )
    if code == "no_segmenter":
        return Explanation("Object selection is not available", message)
    if code == "old_server":  # the client's message names the option and how to update
        return Explanation("LaMa server is too old", f"{message}.")
    if code == "unknown_op":
        return Explanation(
            "LaMa server is too old",
            f"{message}\nUpdate lama-server (pip install -U lama-inpaint) and restart it.",
        )
    if code == "too_large":
        return Explanation("Selection too large", f"{message}\nSelect a smaller area.")
    return Explanation("LaMa inpainting failed", f"{message} [{code or type(error).__name__}]")
