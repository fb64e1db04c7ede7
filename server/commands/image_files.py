"""Read and write image files as numpy arrays without losing bit depth or alpha.

Pillow handles 8-bit files and 16-bit greyscale; 16-bit colour PNGs go through ``pypng``
because Pillow reduces them to 8 bits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import png
from PIL import Image, UnidentifiedImageError


class ImageFileError(ValueError):
    """An image or mask file that cannot be used."""


def _png_bitdepth(path: Path) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` from a PNG header, or None if not a PNG."""
    with path.open("rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[24], head[25]


def read_image(path: str | Path) -> np.ndarray:
    """Image → ``H×W×C`` array (C = 1..4), uint8 or uint16 as stored."""
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    header = _png_bitdepth(path)
    if header and header[0] == 16 and header[1] in (2, 4, 6):
        return _read_png16(path)
    try:
        with Image.open(path) as im:
            im.load()
            return _pil_to_array(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageFileError(f"{path}: not a readable image ({exc})") from exc


def _pil_to_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im).astype(np.uint16)[:, :, None]
    if im.mode == "I":  # Pillow's mode for some 16-bit greyscale files
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)[:, :, None]
    if im.mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im)
        return arr[:, :, None] if arr.ndim == 2 else arr
    if im.mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        has_alpha = im.mode in ("PA",) or (im.mode == "P" and "transparency" in im.info)
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    raise ImageFileError(f"unsupported image mode {im.mode}")


def _read_png16(path: Path) -> np.ndarray:
    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        planes = info["planes"]
        data = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    except (png.Error, OSError, ValueError) as exc:
        raise ImageFileError(f"{path}: damaged PNG ({exc})") from exc
    return data.reshape(height, width, planes)


def read_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Mask file → ``H×W`` uint8 of 0/255: white (> 127 on 8 bits) is the area to fill.

    ``size`` is the image's ``(height, width)``; a mismatch is an error.
    """
    pixels = read_image(path)
    if pixels.shape[:2] != size:
        raise ImageFileError(
            f"{path}: mask is {pixels.shape[1]}×{pixels.shape[0]} but the image is "
            f"{size[1]}×{size[0]}"
        )
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    channels = pixels.shape[2]
    # Greyscale value of the colour channels; an alpha channel, if any, is ignored.
    grey = pixels[:, :, 0] if channels < 3 else pixels[:, :, :3].max(axis=2)
    return np.where(grey > 127, 255, 0).astype(np.uint8)


def write_image(path: str | Path, pixels: np.ndarray) -> None:
    """Write ``H×W×C`` uint8/uint16 pixels; 16-bit needs PNG (or greyscale TIFF)."""
    path = Path(path)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if pixels.dtype == np.uint16:
        if path.suffix.lower() != ".png":
            raise ImageFileError(f"{path}: 16-bit output needs a .png file name")
        greyscale = channels <= 2
        writer = png.Writer(
            pixels.shape[1],
            pixels.shape[0],
            greyscale=greyscale,
            alpha=channels in (2, 4),
            bitdepth=16,
        )
        rows = pixels.reshape(pixels.shape[0], -1)
        with path.open("wb") as f:
            writer.write(f, rows)
        return
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode=mode)
    if path.suffix.lower() in (".jpg", ".jpeg") and channels in (2, 4):
        raise ImageFileError(f"{path}: JPEG cannot keep the alpha channel; use .png")
    try:
        image.save(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ImageFileError(f"{path}: cannot write ({exc})") from exc
