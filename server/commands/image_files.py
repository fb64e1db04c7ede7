"""Read and write image files as numpy arrays without losing bit depth, alpha or metadata.

Pillow handles 8-bit files and 16-bit greyscale; 16-bit colour PNGs go through ``pypng``
because Pillow reduces them to 8 bits.

Pixels are handed out **as displayed**: a photo whose EXIF orientation says "rotate 90°" is
rotated here, so a mask drawn on the photo as a viewer shows it fits. The output then holds
upright pixels, so its EXIF (kept, with the ICC profile) says orientation 1.

Files are written under a temporary name in the same folder and renamed, so an interrupted run
never leaves half a file under the final name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import png
from PIL import Image, UnidentifiedImageError

EXIF_ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SUFFIXES = (".jpg", ".jpeg")

# EXIF orientation → the array operation that shows the stored pixels upright (as Pillow's
# ImageOps.exif_transpose does; proved against it in the tests).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, -1)[::-1],
    8: lambda a: np.rot90(a, 1),
}
SWAPS_SIDES = frozenset({5, 6, 7, 8})


class ImageFileError(ValueError):
    """An image or mask file that cannot be used."""


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says, read without decoding its pixels."""

    path: Path
    width: int  # as displayed, after the EXIF orientation
    height: int
    orientation: int  # EXIF orientation of the stored pixels, 1 = upright
    deep: bool  # 16 bits per channel
    alpha: bool
    exif: bytes | None = None  # the file's EXIF with the orientation reset to 1
    icc_profile: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` as displayed, the shape of the pixels :func:`read_image` gives."""
        return self.height, self.width


def _png_bitdepth(path: Path) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` from a PNG header, or None if not a PNG."""
    with path.open("rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != PNG_SIGNATURE:
        return None
    return head[24], head[25]


def probe_image(path: str | Path) -> ImageInfo:
    """Check that ``path`` is an image file and read its size, orientation and metadata."""
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    header = _png_bitdepth(path)
    try:
        with Image.open(path) as im:
            exif = im.getexif()
            orientation = exif.get(EXIF_ORIENTATION, 1)
            orientation = orientation if orientation in _UPRIGHT else 1
            if EXIF_ORIENTATION in exif:
                exif[EXIF_ORIENTATION] = 1  # the pixels we hand out are upright
            width, height = im.size
            if orientation in SWAPS_SIDES:
                width, height = height, width
            # The modes _pil_to_array gives an alpha channel.
            has_alpha = im.mode in ("LA", "PA", "RGBA") or (
                im.mode == "P" and "transparency" in im.info
            )
            return ImageInfo(
                path, width, height, orientation,
                deep=bool(header and header[0] == 16) or im.mode.startswith("I"),
                alpha=has_alpha,
                exif=exif.tobytes() if len(exif) else None,
                icc_profile=im.info.get("icc_profile") or None,
            )  # fmt: skip
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageFileError(f"{path}: not a readable image ({exc})") from exc


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels → as displayed, for an EXIF ``orientation`` (1..8)."""
    turn = _UPRIGHT.get(orientation)
    return pixels if turn is None else np.ascontiguousarray(turn(pixels))


def read_image(path: str | Path) -> np.ndarray:
    """Image → ``H×W×C`` array (C = 1..4), uint8 or uint16 as stored, upright as displayed."""
    info = probe_image(path)
    return upright(_read_stored(info.path), info.orientation)


def _read_stored(path: Path) -> np.ndarray:
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


def mask_turn(mask: ImageInfo, size: tuple[int, int], orientation: int) -> int:
    """The orientation to apply to the mask's upright pixels so that they fit the image.

    ``size``: the image's ``(height, width)`` as displayed; ``orientation``: its EXIF
    orientation. A mask is taken as drawn on the image as displayed (1). A mask without its
    own orientation that fits the image's stored frame instead (drawn on the raw pixels of a
    rotated photo) gets the image's orientation. Anything else is a size mismatch.
    """
    if mask.size == size:
        return 1
    if mask.orientation == 1 and orientation in SWAPS_SIDES and mask.size == size[::-1]:
        return orientation
    raise ImageFileError(
        f"{mask.path}: mask is {mask.width}×{mask.height} but the image is {size[1]}×{size[0]}"
    )


def read_mask(path: str | Path, size: tuple[int, int], image_orientation: int = 1) -> np.ndarray:
    """Mask file → ``H×W`` uint8 of 0/255: white (> 127 on 8 bits) is the area to fill.

    ``size`` is the image's ``(height, width)`` as displayed and ``image_orientation`` its EXIF
    orientation (see :func:`mask_turn`); a mismatch is an error.
    """
    info = probe_image(path)
    turn = mask_turn(info, size, image_orientation)
    pixels = upright(upright(_read_stored(info.path), info.orientation), turn)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    channels = pixels.shape[2]
    # Greyscale value of the colour channels; an alpha channel, if any, is ignored.
    grey = pixels[:, :, 0] if channels < 3 else pixels[:, :, :3].max(axis=2)
    return np.where(grey > 127, 255, 0).astype(np.uint8)


def output_format(path: Path) -> str:
    """Pillow's format name for an output file name, from its extension."""
    Image.init()
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ImageFileError(
            f"{path}: unknown image file extension {path.suffix!r}; use .png, .jpg, .tif or .webp"
        )
    return fmt


def check_output(path: Path, deep: bool, alpha: bool) -> None:
    """Refuse an output path before any work: a folder, an unknown or unfit extension, a
    folder that cannot be created or written to."""
    if path.is_dir():
        raise ImageFileError(f"{path}: is a folder; give a file name such as {path / 'out.png'}")
    output_format(path)
    if deep and path.suffix.lower() != ".png":
        raise ImageFileError(f"{path}: 16-bit output needs a .png file name")
    if alpha and path.suffix.lower() in JPEG_SUFFIXES:
        raise ImageFileError(f"{path}: JPEG cannot keep the alpha channel; use .png")
    check_folder_creatable(path.parent)


def check_folder_creatable(folder: Path) -> None:
    """The folder exists and is writable, or its nearest existing parent is."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ImageFileError(f"cannot create the folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ImageFileError(f"cannot write into {existing}: permission denied")


def write_image(path: str | Path, pixels: np.ndarray, info: ImageInfo | None = None) -> None:
    """Write ``H×W×C`` uint8/uint16 pixels; 16-bit needs PNG.

    ``info``: the source image's header, whose EXIF (orientation 1) and ICC profile the file
    keeps (8-bit files; pypng, which writes 16-bit colour, has no metadata chunks).
    """
    path = Path(path)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    fmt = output_format(path)
    if pixels.dtype == np.uint16 and path.suffix.lower() != ".png":
        raise ImageFileError(f"{path}: 16-bit output needs a .png file name")
    if path.suffix.lower() in JPEG_SUFFIXES and channels in (2, 4):
        raise ImageFileError(f"{path}: JPEG cannot keep the alpha channel; use .png")
    if pixels.dtype == np.uint16:
        _write_through_temporary(path, lambda f: _write_png16(f, pixels))
        return
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode=mode)
    metadata = {}
    if info is not None and info.exif:
        metadata["exif"] = info.exif
    if info is not None and info.icc_profile:
        metadata["icc_profile"] = info.icc_profile
    try:
        _write_through_temporary(path, lambda f: image.save(f, format=fmt, **metadata))
    except (OSError, ValueError, KeyError) as exc:
        raise ImageFileError(f"{path}: cannot write ({exc})") from exc


def _write_png16(f, pixels: np.ndarray) -> None:
    channels = pixels.shape[2]
    writer = png.Writer(
        pixels.shape[1],
        pixels.shape[0],
        greyscale=channels <= 2,
        alpha=channels in (2, 4),
        bitdepth=16,
    )
    writer.write(f, pixels.reshape(pixels.shape[0], -1))


def _write_through_temporary(path: Path, write: Callable[[object], None]) -> None:
    """``write(file)`` into a hidden file beside ``path``, then rename it to ``path``."""

    def into(temporary: Path) -> None:
        with open(temporary, "wb") as f:
            write(f)

    replace_through_temporary(path, into)


def replace_through_temporary(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)`` fills a new hidden file beside ``path``, which is then renamed to
    ``path``: an interrupted write never leaves a half file under the final name. The name is
    random and the file is created exclusively, so a file or link planted beside ``path`` by
    someone else is never followed or overwritten."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    # 0o666 before the umask: the same permissions a plain open() would give the file.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
