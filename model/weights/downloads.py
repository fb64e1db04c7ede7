"""Known models: where the official weights live, their checksums, and the per-user cache.

``ensure_model("big-lama")`` returns the cached model, downloading it on first use with a
progress bar and verifying the checksum. Offline, it fails at once with a message that says
where to get the file and where to put it. Set ``LAMA_OFFLINE=1`` to never try the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lama_model.errors import WeightsError


@dataclass(frozen=True)
class KnownModel:
    """A downloadable model.

    ``digest`` is ``"<algo>:<hex>"``. The official big-lama.zip has no published checksum, so
    its entry pins none: the SHA-256 of what was downloaded is written to
    ``.source-sha256`` in the model folder for the user to audit, and the README says so.
    """

    name: str
    url: str
    filename: str
    digest: str | None
    size_hint: str
    unpack_to: str | None = None  # folder name inside the zip, for zipped model folders
    description: str = ""
    local_hint: str = "pass --model PATH to a model folder or file"  # the offline alternative
    #: ``generator``: an inpainting model (``--model NAME``); ``segmenter``: a
    #: ``load_segmenter`` model (select an object); ``training``: a file only
    #: ``lama-train`` uses (never offered to, or downloaded by, the inference commands).
    kind: str = "generator"


KNOWN_MODELS: dict[str, KnownModel] = {
    "big-lama": KnownModel(
        name="big-lama",
        url="https://huggingface.co/smartywu/big-lama/resolve/main/big-lama.zip",
        filename="big-lama.zip",
        digest=None,
        size_hint="a few hundred MB",
        unpack_to="big-lama",
        description="official Big LaMa release (config.yaml + models/best.ckpt)",
    ),
    "big-lama-jit": KnownModel(
        name="big-lama-jit",
        url="https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",
        filename="big-lama.pt",
        digest="md5:e3aa4aaa15225a33ec84f9f4bc47e500",
        size_hint="about 200 MB",
        description="Big LaMa traced to TorchScript, as IOPaint and others distribute it",
    ),
    # For training only (lama-train): the encoder of the CSAIL ADE20k scene-parsing model that
    # the ResNetPL perceptual loss runs. CSAIL publishes no checksum; this project could not
    # download the file here, so the SHA-256 pinned below is the one two unrelated projects
    # publish for the same CSAIL file (FoTa-Net's dataset docs and an MSO reconstruction
    # script's preflight check, found with the code search), not one measured by us. The site
    # serves https as well as the http that the official scripts name.
    "ade20k-resnet50dilated": KnownModel(
        name="ade20k-resnet50dilated",
        url="https://sceneparsing.csail.mit.edu/model/pytorch/"
        "ade20k-resnet50dilated-ppm_deepsup/encoder_epoch_20.pth",
        filename="ade20k-resnet50dilated-encoder_epoch_20.pth",
        digest="sha256:d7dcb0234a2c1fd23d490d48c2c2fc5c39dc2b0ce39085b2f6f7e867fdd5d304",
        size_hint="about 95 MB",
        description="ADE20k ResNet-50-dilated encoder for the ResNetPL training loss (lama-train)",
        local_hint="pass lama-train --resnet-pl PATH to a copy of encoder_epoch_20.pth",
        kind="training",
    ),
    # For evaluation only (lama-train eval, best.ckpt's FID): the networks of the official
    # evaluator's LPIPS and FID. torchvision's and pytorch-fid's file names carry the first
    # 8 hex digits of their SHA-256; the full digests are pinned here.
    "lpips-vgg16": KnownModel(
        name="lpips-vgg16",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        filename="vgg16-397923af.pth",
        digest="sha256:397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        size_hint="about 530 MB",
        description="torchvision's ImageNet VGG-16, the network of LPIPS (lama-train eval)",
        local_hint="set LAMA_CACHE_DIR to a folder that holds vgg16-397923af.pth",
        kind="evaluation",
    ),
    "lpips-vgg-lin": KnownModel(
        name="lpips-vgg-lin",
        # the file at a fixed commit of PerceptualSimilarity (the same bytes as LaMa's
        # models/lpips_models/vgg.pth)
        url="https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/"
        "082bb24f84c091ea94de2867d34c4544f68e0963/lpips/weights/v0.1/vgg.pth",
        filename="lpips-v0.1-vgg.pth",
        digest="sha256:a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        size_hint="7 KB",
        description="LPIPS v0.1 linear layers for VGG-16 (lama-train eval)",
        local_hint="set LAMA_CACHE_DIR to a folder that holds lpips-v0.1-vgg.pth",
        kind="evaluation",
    ),
    # Segmenters (lama_model.load_segmenter, the server's segment op). The official file is
    # weights/mobile_sam.pt in ChaoningZhang/MobileSAM (Apache-2.0), served raw from GitHub.
    # Its md5 is the one IOPaint, Tracking-Anything-with-DEVA and others pin for the same file
    # (this project could not download it to pin a SHA-256; the md5 guards corruption).
    "mobile-sam": KnownModel(
        name="mobile-sam",
        url="https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt",
        filename="mobile_sam.pt",
        digest="md5:f3c0d8cda613564d499310dab6c812cd",
        size_hint="about 39 MB",
        description="MobileSAM (TinyViT-5M encoder, SAM decoder): select an object by box or click",
        local_hint="pass --segment-model PATH to a copy of mobile_sam.pt",
        kind="segmenter",
    ),
    "fid-inception": KnownModel(
        name="fid-inception",
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
        filename="pt_inception-2015-12-05-6726825d.pth",
        digest="sha256:6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        size_hint="about 92 MB",
        description="pytorch-fid's port of the FID Inception V3 (lama-train eval)",
        local_hint="set LAMA_CACHE_DIR to a folder that holds pt_inception-2015-12-05-6726825d.pth",
        kind="evaluation",
    ),
}


def known_generators() -> list[str]:
    """Names of the known inpainting models (what ``--model NAME`` accepts)."""
    return [name for name, entry in KNOWN_MODELS.items() if entry.kind == "generator"]


def cache_dir() -> Path:
    """Per-user model cache: ``$LAMA_CACHE_DIR``, else the platform's cache folder."""
    if env := os.environ.get("LAMA_CACHE_DIR"):
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "lama-inpaint" / "models"


def model_path(entry: KnownModel) -> Path:
    """Where a known model lives once installed (a folder for zips, else the file)."""
    root = cache_dir()
    return root / entry.unpack_to if entry.unpack_to else root / entry.filename


def ensure_model(name: str, show_progress: bool = True) -> Path:
    """Return the local path of a known model, downloading and verifying it if needed."""
    try:
        entry = KNOWN_MODELS[name]
    except KeyError:
        raise WeightsError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}") from None
    target = model_path(entry)
    if target.exists():
        _verify_cached(entry, target)
        return target
    if os.environ.get("LAMA_OFFLINE") == "1":
        raise WeightsError(_offline_message(entry, target, "LAMA_OFFLINE=1 is set"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        download = Path(tmp) / entry.filename
        try:
            sha256 = _download(entry.url, download, show_progress)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise WeightsError(_offline_message(entry, target, str(exc))) from exc
        verify_digest(download, entry.digest)
        if entry.unpack_to:
            _unpack(download, Path(tmp) / "unpacked", entry)
            shutil.move(str(Path(tmp) / "unpacked" / entry.unpack_to), str(target))
            (target / ".source-sha256").write_text(sha256 + "\n")
        else:
            shutil.move(str(download), str(target))
    return target


def _offline_message(entry: KnownModel, target: Path, reason: str) -> str:
    where = (
        f"unzip it so that {target}/config.yaml exists"
        if entry.unpack_to
        else f"save it as {target}"
    )
    return (
        f"cannot download {entry.name} ({reason}). Download {entry.url} ({entry.size_hint}) "
        f"by other means and {where}, or {entry.local_hint}."
    )


def _download(url: str, dest: Path, show_progress: bool) -> str:
    """Stream ``url`` to ``dest`` with a progress bar; returns the SHA-256."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "lama-inpaint"})
    with urllib.request.urlopen(request, timeout=30) as response, dest.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        bar = _progress_bar(total, dest.name) if show_progress else None
        while chunk := response.read(1 << 20):
            out.write(chunk)
            digest.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    return digest.hexdigest()


def _progress_bar(total: int, label: str):
    from tqdm import tqdm

    return tqdm(total=total or None, unit="B", unit_scale=True, desc=label, file=sys.stderr)


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify_digest(path: Path, digest: str | None) -> None:
    """Raise :class:`WeightsError` unless ``path`` has ``digest`` (``algo:hex``)."""
    if digest is None:
        return
    algorithm, _, expected = digest.partition(":")
    actual = file_digest(path, algorithm)
    if actual.lower() != expected.lower():
        raise WeightsError(
            f"{path.name}: checksum mismatch ({algorithm} {actual}, expected {expected}); "
            "the download is corrupt or not the official file. It was not installed."
        )


def _verify_cached(entry: KnownModel, target: Path) -> None:
    """A cached file is verified at every use: a pinned file altered in the cache (by a disk
    error or by someone who could write there) is refused rather than loaded."""
    if target.is_file():
        verify_digest(target, entry.digest)


def _unpack(archive: Path, dest: Path, entry: KnownModel) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                resolved = (dest / member).resolve()
                if not str(resolved).startswith(str(dest.resolve())):
                    raise WeightsError(f"{archive.name}: unsafe path in archive: {member}")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise WeightsError(f"{archive.name}: not a zip archive ({exc})") from exc
    if not (dest / entry.unpack_to / "config.yaml").is_file():
        raise WeightsError(f"{archive.name}: no {entry.unpack_to}/config.yaml inside")
