"""Training data: a folder of photos → random augmented crops with Big LaMa masks, for one rank.

The official recipe (``make_default_train_dataloader`` with ``transform_variant: distortions``):
photos as they are (Places' are about 512 px; nothing is shrunk unless ``max_side`` says so), the
"distortions" augmentation and a random 256×256 crop (:mod:`.augment`), a mask from the
training mask sampler (:mod:`.mask_gen`) drawn after the augmentation, and under DDP a
``DistributedSampler`` (epoch permutation ``randperm(n)`` seeded with ``seed + epoch``, rank ``r``
taking every ``world_size``-th entry from ``r``).

Every random choice of a sample (crop, distortions, flip, colours, mask) comes from a generator
seeded by ``(seed, epoch, index)``, so a sample does not depend on the rank or the worker that
makes it, and the loader's stream of batches is a pure function of the step: resuming at
``start_step`` gives exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import random
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from lama_model.train.augment import make_augmenter
from lama_model.train.mask_gen import make_mask_generator

LOGGER = logging.getLogger(__name__)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def find_photos(root: str | Path) -> list[Path]:
    """JPEG, PNG and WebP files under ``root`` (recursive, any case), in a stable order."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder of photos")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())


def decode_photo(path: Path, max_side: int | None = None) -> np.ndarray:
    """An RGB uint8 H×W×3 array, EXIF orientation applied, shrunk so that its long side is at
    most ``max_side`` (None, the official way: keep the size). Raises OSError/ValueError if it
    cannot be read."""
    with Image.open(path) as img:
        if max_side and img.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is much bigger.
            scale = max_side / max(img.size)
            img.draft("RGB", (math.ceil(img.size[0] * scale), math.ceil(img.size[1] * scale)))
        img = ImageOps.exif_transpose(img).convert("RGB")
        if max_side and max(img.size) > max_side:
            scale = max_side / max(img.size)
            size = (max(round(img.size[0] * scale), 1), max(round(img.size[1] * scale), 1))
            img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        return np.asarray(img, dtype=np.uint8)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.RandomState:
    """The random generator of one sample, a function of (seed, epoch, index) only."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(4)
    return np.random.RandomState(state)


class PhotoFolder(Dataset):
    """Random training crops of the photos under ``root``, each with a hole mask.

    ``dataset[i]`` (epoch from :meth:`set_epoch`) or ``dataset[(epoch, i)]`` →
    ``{"image": float32 3×crop×crop in [0, 1], "mask": float32 1×crop×crop, 1 = hole}``.
    A file that cannot be decoded is reported once (a logging warning, across worker
    processes) and replaced by the next decodable photo; it never stops a run.
    """

    def __init__(
        self,
        root: str | Path,
        crop: int = 256,
        mask_kind: str = "large",
        augment: str = "official",
        seed: int = 0,
        max_side: int | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.files = find_photos(self.root)
        if not self.files:
            raise ValueError(f"{self.root}: no JPEG, PNG or WebP photos found")
        if crop < 8:
            raise ValueError(f"crop must be at least 8 pixels, got {crop}")
        self.crop = crop
        self.mask_kind = mask_kind
        self.mask_generator = make_mask_generator(mask_kind)
        self.augment = make_augmenter(augment, crop)
        self.seed = seed
        self.max_side = max_side
        self.epoch = 0
        # One flag per file, shared with the DataLoader's worker processes (inherited at their
        # start): set when a file fails to decode, so it is reported once and then skipped.
        self._broken = multiprocessing.get_context().Array("b", len(self.files))

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """The epoch used by ``dataset[i]`` (the loader's sampler passes it explicitly)."""
        self.epoch = epoch

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if not 0 <= index < len(self.files):
            raise IndexError(f"index {index} out of range for {len(self.files)} photos")
        photo = self._decodable(index)
        rng = sample_rng(self.seed, epoch, index)
        image = self.augment(photo, rng)
        mask = self.mask_generator(rng, self.crop, self.crop)
        return {
            "image": torch.from_numpy(image),
            "mask": torch.from_numpy(np.ascontiguousarray(mask[None], dtype=np.float32)),
        }

    def _decodable(self, index: int) -> np.ndarray:
        """The photo at ``index``, or the next one that decodes (wrapping around)."""
        count = len(self.files)
        for step in range(count):
            candidate = (index + step) % count
            if self._broken[candidate]:
                continue
            try:
                return decode_photo(self.files[candidate], self.max_side)
            except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, ...
                self._report_broken(candidate, exc)
        raise RuntimeError(f"{self.root}: none of the {count} photos could be decoded")

    def _report_broken(self, index: int, exc: Exception) -> None:
        with self._broken.get_lock():
            first = not self._broken[index]
            self._broken[index] = 1
        if first:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            LOGGER.warning("skipping %s: cannot decode it (%s)", self.files[index], reason)


class StepSampler(Sampler):
    """Endless ``(epoch, index)`` stream of one rank, resumable at any position.

    Each epoch is ``torch.randperm(n)`` from a generator seeded with ``seed + epoch``, padded by
    repeating its start to a multiple of ``world_size``; rank ``r`` takes entries ``r, r + W, …``
    (what ``DistributedSampler(shuffle=True, drop_last=False)`` yields). The permutation does not
    depend on ``world_size``: with ``n`` a multiple of it, W ranks with batch b see what one
    process with batch W·b sees, split strided. ``start`` skips that many of this rank's samples.
    """

    def __init__(self, size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start: int = 0) -> None:  # fmt: skip
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0…{world_size - 1}")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.start = start
        self.per_rank = math.ceil(size / world_size)

    def epoch_indices(self, epoch: int) -> list[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        total = self.per_rank * self.world_size
        while len(order) < total:
            order += order[: total - len(order)]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            for index in self.epoch_indices(epoch)[offset:]:
                yield epoch, index
            epoch, offset = epoch + 1, 0


def seed_worker(worker_id: int, *, seed: int, rank: int) -> None:
    """Seed the global NumPy and Python generators of a worker process per (seed, rank, worker),
    for any code that uses them; our samples use their own generators."""
    state = np.random.SeedSequence([seed, rank, worker_id]).generate_state(2)
    np.random.seed(state)
    random.seed(int(state[0]))


def init_worker(worker_id: int, *, seed: int, rank: int) -> None:
    """Start a data-loading process: seeded, and deaf to Ctrl-C.

    A terminal sends Ctrl-C to the whole process group; the main process answers it by
    finishing the step and saving the run, and needs its workers alive until it shuts them down.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed_worker(worker_id, seed=seed, rank=rank)


def make_train_loader(
    root: str | Path,
    *,
    crop: int = 256,
    batch_size: int = 8,
    workers: int = 2,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    mask_kind: str = "large",
    augment: str = "official",
    max_side: int | None = None,
    start_step: int = 0,
) -> DataLoader:
    """Endless loader of this rank's batches ``{"image": B×3×crop², "mask": B×1×crop²}``.

    Batch ``s`` is the same whatever ``start_step`` the loader was made with; ``workers``
    processes decode and augment (0: in the calling process); ``augment`` names one of
    :data:`lama_model.train.augment.AUGMENTATIONS`; ``max_side`` shrinks bigger photos.
    """
    dataset = PhotoFolder(root, crop=crop, mask_kind=mask_kind, augment=augment, seed=seed,
                          max_side=max_side)  # fmt: skip
    sampler = StepSampler(
        len(dataset), seed=seed, rank=rank, world_size=world_size, start=start_step * batch_size
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=partial(init_worker, seed=seed, rank=rank),
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers > 0 else None,
    )


def make_validation_set(
    root: str | Path, *, size: int = 256, count: int = 16, seed: int = 0, mask_kind: str = "large"
) -> list[dict[str, torch.Tensor | str]]:
    """A fixed validation set: ``count`` photos spread over the folder (fewer if the folder has
    fewer), each scaled so its short side is ``size`` and centre-cropped, with masks drawn from
    ``RandomState(seed)``.

    Items: ``{"image": 3×size×size, "mask": 1×size×size, "path": str}``. Undecodable files
    are reported and skipped.
    """
    files = find_photos(root)
    if not files:
        raise ValueError(f"{root}: no JPEG, PNG or WebP photos found")
    generate = make_mask_generator(mask_kind)
    rng = np.random.RandomState(seed)
    spread = np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)
    picks = list(dict.fromkeys([*spread.tolist(), *range(len(files))]))  # the rest as reserve
    items: list[dict[str, torch.Tensor | str]] = []
    for index in picks:
        if len(items) == count:
            break
        try:
            photo = decode_photo(files[index])
        except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, ...
            LOGGER.warning("skipping %s: cannot decode it (%s)", files[index], exc)
            continue
        image = _centre_square(photo, size)
        mask = generate(rng, size, size)
        items.append({
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255,
            "mask": torch.from_numpy(np.ascontiguousarray(mask[None], dtype=np.float32)),
            "path": str(files[index]),
        })  # fmt: skip
    if not items:
        raise ValueError(f"{root}: none of the photos could be decoded")
    return items


def _centre_square(photo: np.ndarray, size: int) -> np.ndarray:
    height, width = photo.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(round(width * scale), size), max(round(height * scale), size)
    img = Image.fromarray(photo).resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.asarray(img)[top : top + size, left : left + size]
