"""OpenVINO IR files (``.xml`` graph + ``.bin`` weights) kept between starts, verified on load.

Converting Big LaMa from torch and calibrating it for int8 takes most of the first start; the
result is saved under ``<model cache>/openvino/`` keyed by the weights' digest, the precision
and the OpenVINO version, with a manifest of both files' SHA-256. An entry is loaded only if:

- the folder is the user's own and not writable by group or others (someone who can write
  there could swap in a graph that computes something else);
- both files match the manifest (a truncated or altered file is rebuilt, not loaded).

A refused entry is rebuilt and written again (atomically: files written beside, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".sha256.json"


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, shape, dtype and bytes (16 hex digits)."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(data.shape)}{data.dtype}".encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unsafe_folder(folder: Path) -> str | None:
    """Why ``folder`` must not hold graphs this process loads, or None when it is safe."""
    if os.name != "posix":
        return None  # per-user profile folders; POSIX modes do not apply
    try:
        info = folder.stat()
    except OSError as exc:
        return f"cannot read {folder}: {exc.strerror}"
    if info.st_uid != os.getuid():
        return f"{folder} belongs to another user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{folder} is writable by other users"
    return None


def load_ir(xml: Path) -> object | None:
    """The verified model at ``xml``, or None (missing, refused or corrupt: rebuild it)."""
    import openvino as ov

    manifest = xml.with_name(xml.name + MANIFEST_SUFFIX)
    if not (xml.is_file() and manifest.is_file()):
        return None
    why = unsafe_folder(xml.parent)
    if why is None:
        try:
            expected = json.loads(manifest.read_text())
            bin_file = xml.with_suffix(".bin")
            for path in (xml, bin_file):
                if expected.get(path.name) != file_digest(path):
                    why = f"{path.name} does not match its recorded SHA-256"
        except (OSError, ValueError, AttributeError) as exc:
            why = f"unreadable manifest: {exc}"
    if why is not None:
        log.warning("not loading the cached OpenVINO model %s: %s; rebuilding it", xml, why)
        return None
    try:
        return ov.Core().read_model(str(xml))
    except RuntimeError as exc:
        log.warning("cached OpenVINO model %s does not load (%s); rebuilding it", xml, exc)
        return None


def save_ir(model: object, xml: Path) -> None:
    """Write ``model`` to ``xml`` (+ ``.bin``) and its manifest; a cache that cannot be
    written costs only the rebuild next start."""
    import openvino as ov

    try:
        xml.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = xml.with_name(f"{xml.stem}.{os.getpid()}.partial.xml")
        ov.save_model(model, str(partial), compress_to_fp16=False)
        bin_file, partial_bin = xml.with_suffix(".bin"), partial.with_suffix(".bin")
        digests = {xml.name: file_digest(partial), bin_file.name: file_digest(partial_bin)}
        manifest = xml.with_name(xml.name + MANIFEST_SUFFIX)
        partial_bin.replace(bin_file)
        partial.replace(xml)
        manifest.write_text(json.dumps(digests, indent=1, sort_keys=True))
    except (OSError, RuntimeError) as exc:
        log.warning("cannot cache the OpenVINO model in %s: %s", xml.parent, exc)


def cached_ir(xml: Path, build: Callable[[], object]) -> tuple[object, bool]:
    """The model at ``xml`` when verified, else ``build()`` saved there; and whether it was
    read from the cache."""
    model = load_ir(xml)
    if model is not None:
        return model, True
    model = build()
    save_ir(model, xml)
    return model, False


__all__ = ["cached_ir", "file_digest", "load_ir", "save_ir", "unsafe_folder", "weights_digest"]
