"""Pixel formats on the wire ↔ numpy arrays, with no Python loop over pixels.

Hosts send pixels as they store them (Krita: BGRA for 8/16-bit integer documents, RGBA floats;
GIMP: RGBA through babl). The server turns them into ``H×W×C`` arrays in RGB(A) order for the
model and back into the very same layout for the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PixelFormat:
    """One wire format: channel order, sample type (little-endian), bytes per pixel."""

    name: str
    order: str  # channel letters in memory order
    dtype: np.dtype

    @property
    def channels(self) -> int:
        return len(self.order)

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.dtype.itemsize

    @property
    def has_alpha(self) -> bool:
        return "A" in self.order


_U8, _U16, _F32 = np.dtype("u1"), np.dtype("<u2"), np.dtype("<f4")
FORMATS: dict[str, PixelFormat] = {
    f.name: f
    for f in (
        PixelFormat("RGBA8", "RGBA", _U8),
        PixelFormat("BGRA8", "BGRA", _U8),
        PixelFormat("RGB8", "RGB", _U8),
        PixelFormat("GRAY8", "Y", _U8),
        PixelFormat("GRAYA8", "YA", _U8),
        PixelFormat("RGBA16", "RGBA", _U16),
        PixelFormat("BGRA16", "BGRA", _U16),
        PixelFormat("RGB16", "RGB", _U16),
        PixelFormat("GRAY16", "Y", _U16),
        PixelFormat("GRAYA16", "YA", _U16),
        PixelFormat("RGBAF32", "RGBA", _F32),
    )
}

# Where each memory-order channel goes in canonical (R, G, B, A) / (Y) order.
CANONICAL_ORDER = {"RGBA": "RGBA", "BGRA": "RGBA", "RGB": "RGB", "Y": "Y", "YA": "YA"}


def wire_to_array(fmt_name: str, width: int, height: int, data: bytes) -> np.ndarray:
    """Wire bytes → ``H×W×C`` array in canonical order (RGB, RGBA or Y), native dtype.

    The caller has checked ``len(data) == width * height * bytes_per_pixel``.
    """
    fmt = FORMATS[fmt_name]
    arr = np.frombuffer(data, dtype=fmt.dtype).reshape(height, width, fmt.channels)
    canonical = CANONICAL_ORDER[fmt.order]
    if fmt.order != canonical:
        arr = arr[:, :, [fmt.order.index(c) for c in canonical]]
    # Native byte order (a no-op on little-endian machines); otherwise no copy: the model only
    # reads its input, so a read-only view of the message is fine and saves a pass over MBs.
    arr = arr.astype(fmt.dtype.newbyteorder("="), copy=False)
    if fmt.dtype.kind == "f":
        # Hosts may hold NaN or infinities in float documents: make them harmless for the model.
        arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    return arr


def array_to_wire(fmt_name: str, arr: np.ndarray) -> bytes:
    """Canonical-order array → wire bytes in ``fmt_name``'s layout."""
    fmt = FORMATS[fmt_name]
    canonical = CANONICAL_ORDER[fmt.order]
    if fmt.order != canonical:
        arr = arr[:, :, [canonical.index(c) for c in fmt.order]]
    return np.ascontiguousarray(arr, dtype=fmt.dtype).tobytes()


def format_for_array(arr: np.ndarray) -> str:
    """The wire format that carries an ``H×W×C`` array without loss (for ``lama-inpaint``)."""
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    names = {
        np.dtype(np.uint8): {1: "GRAY8", 2: "GRAYA8", 3: "RGB8", 4: "RGBA8"},
        np.dtype(np.uint16): {1: "GRAY16", 2: "GRAYA16", 3: "RGB16", 4: "RGBA16"},
        np.dtype(np.float32): {4: "RGBAF32"},
    }
    try:
        return names[arr.dtype][channels]
    except KeyError:
        raise ValueError(f"no wire format for {channels} channel(s) of {arr.dtype}") from None


def rgb8(image: np.ndarray) -> np.ndarray:
    """A canonical-order array (RGB(A) or Y(A), 8/16-bit or float 0..1) as ``H×W×3`` uint8
    RGB, a segmenter's input; alpha is dropped (the object's colours decide, not its
    opacity), NaN reads as 0."""
    if image.ndim == 2:
        image = image[:, :, None]
    colour = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
    if colour.dtype == np.uint8:
        return np.ascontiguousarray(colour)
    if colour.dtype == np.uint16:
        return ((colour.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    scaled = np.nan_to_num(colour.astype(np.float32), nan=0.0) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
