"""How errors are told to a person: one line, never a traceback or a library's paragraph.

The error classes of the inference side live here, torch-free, so that command lines can
catch them without loading torch; each module that raises one imports it from here.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:300]


class WeightsError(RuntimeError):
    """A model cannot be fetched or fails its checksum."""


class PrecisionError(ValueError):
    """The requested precision cannot run on this device or model."""


class BackendError(ValueError):
    """The requested backend cannot run here (missing package, wrong model kind)."""


class DeviceError(RuntimeError):
    """The requested device is not available on this machine."""


class RefineError(ValueError):
    """Refinement cannot run with this model or these options (one-line message)."""


class CheckpointError(ValueError):
    """A model file that cannot be used, with the reason in the message."""


class PromptError(ValueError):
    """A segmentation prompt that cannot be used (empty box, box outside the image, no
    prompt, too many points, labels not 0/1), told in one line."""
