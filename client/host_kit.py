"""What the Krita and GIMP plug-ins share: the context window and the words for an error.

One copy of each rule, in the package that ``lama-server install-plugin`` bundles into both
plug-ins; each host only adapts it to its own types (Krita's rectangles, GIMP's message line).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    if code == "too_large":
        return Explanation("Selection too large", f"{message}\nSelect a smaller area.")
    return Explanation("LaMa inpainting failed", f"{message} [{code or type(error).__name__}]")
