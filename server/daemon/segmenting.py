"""The segment worker: a box or points on an image window become the object's mask.

It runs in its own thread, fed by its own queue (the router's ``segment`` scheduler), so a
segment request never holds an inpaint request behind it: the two only share the processor
(on a CPU server an inpaint that overlaps an encoder pass is slowed by at most that pass). The
segmenter is loaded on the first request, in this thread (a download, if any, holds only
segment requests). The image embedding (the encoder's output, the slow part) is kept per
window in a small LRU cache keyed by a hash of the window's pixels that the server computes
itself: a client cannot name an embedding, only send pixels that hash to it.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

import numpy as np

from lama_model.errors import CheckpointError, PromptError, WeightsError, one_line
from lama_server.daemon.scheduler import Job
from lama_server.wire import protocol
from lama_server.wire.pixel_formats import rgb8, wire_to_array
from lama_server.wire.protocol import Request
from lama_server.wire.replies import segment_reply

if TYPE_CHECKING:
    from lama_model.interface import ServedSegmenter
    from lama_model.segment import ImageEmbedding

log = logging.getLogger("lama_server")

#: Embeddings kept (least recently used dropped first). MobileSAM's is about 14 MiB (the
#: 256×64×64 features plus the decoder's per-image work kept with them), 56 MiB for four:
#: a few windows a user goes back and forth between, without holding much memory.
EMBEDDING_CACHE_SIZE = 4

Emit = Callable[[Job, bytes], None]
Loader = Callable[[str, str], "ServedSegmenter"]


class SegmentCancelled(Exception):
    """The client cancelled (or left) while its segment request ran."""


class SegmenterUnavailable(Exception):
    """The segmenter could not be loaded (weights missing offline, a bad checkpoint file):
    the one-line reason, for the client's ``no_segmenter`` error."""


class EmbeddingCache:
    """A bounded LRU of image embeddings keyed by the window's pixel hash (thread-safe)."""

    def __init__(self, capacity: int = EMBEDDING_CACHE_SIZE) -> None:
        self.capacity = capacity
        self._entries: collections.OrderedDict[bytes, ImageEmbedding] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> ImageEmbedding | None:
        with self._lock:
            embedding = self._entries.get(key)
            if embedding is not None:
                self._entries.move_to_end(key)
            return embedding

    def put(self, key: bytes, embedding: ImageEmbedding) -> None:
        with self._lock:
            self._entries[key] = embedding
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def window_key(req: Request) -> bytes:
    """The cache key of a request's window: a hash of its size, format and pixels."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{req.width}x{req.height}:{req.format}:".encode())
    digest.update(req.image_data)
    return digest.digest()


def default_loader(name_or_path: str, device: str) -> ServedSegmenter:
    """``lama_model.load_segmenter`` (imported here: the server starts without it)."""
    from lama_model import load_segmenter

    return load_segmenter(name_or_path, device)


class SegmentWorker:
    """Serves ``segment`` jobs with one lazily loaded segmenter and its embedding cache."""

    max_batch = 1
    batch_wait = 0.0

    def __init__(self, name_or_path: str, device: str, loader: Loader = default_loader) -> None:
        self.name = name_or_path
        self.device_name = device
        self._loader = loader
        self.segmenter: ServedSegmenter | None = None
        self.load_error: str | None = None  # the last failed load, for ``info``
        self.cache = EmbeddingCache()
        self.completed = 0

    def batch_key(self, request: Request) -> Hashable | None:
        return None  # every prompt is its own decoder pass

    def run_batch(self, jobs: list[Job], emit: Emit) -> list[bytes]:
        return [self.run(job, emit) for job in jobs]

    def info(self) -> dict:
        """``info``'s ``segment`` entry: what is served and whether it is loaded yet."""
        line: dict = {
            "model": self.name, "loaded": self.segmenter is not None,
            "cached_embeddings": len(self.cache), "completed": self.completed,
        }  # fmt: skip
        if self.segmenter is not None:
            line["description"] = self.segmenter.description
        if self.load_error is not None:
            line["error"] = self.load_error
        return line

    def run(self, job: Job, emit: Emit) -> bytes:
        """Run one segment job; returns the final reply (ok or error). Never raises."""
        req = job.request
        started = time.monotonic()
        queue_ms = (started - job.received) * 1000
        try:
            mask, cached = self._segment(job, emit)
        except SegmentCancelled:
            return protocol.error_reply("cancelled", "the request was cancelled", req.id)
        except PromptError as exc:
            return protocol.error_reply("bad_request", one_line(exc), req.id)
        except SegmenterUnavailable as exc:
            return protocol.error_reply("no_segmenter", str(exc), req.id)
        except Exception:
            log.exception("segment %s failed", req.id)
            return protocol.error_reply("internal", "internal error while segmenting", req.id)
        self.completed += 1
        model_ms = (time.monotonic() - started) * 1000
        log.info("segment %s %dx%d %s pixels=%s embedding %s: %.0f ms, queued %.0f", req.id,
                 req.width, req.height, req.format, "file" if req.image_file else "inline",
                 "cached" if cached else "computed", model_ms, queue_ms)  # fmt: skip
        return segment_reply(req, mask, queue_ms, model_ms, cached)

    def _segment(self, job: Job, emit: Emit) -> tuple[np.ndarray, bool]:
        """The mask of ``job``'s prompt, and whether the window's embedding was cached."""
        req = job.request
        prompt = req.prompt
        assert prompt is not None, "the protocol sets a segment request's prompt"

        def progress(fraction: float, stage: str) -> None:
            if job.cancelled.is_set():
                raise SegmentCancelled
            emit(job, protocol.progress_reply(req.id, fraction, stage))

        segmenter = self._loaded(progress)
        key = window_key(req)
        embedding = self.cache.get(key)
        cached = embedding is not None
        if embedding is None:
            progress(0.05, "embed")  # the slow pass (about a second on a CPU at 1024²)
            image = rgb8(wire_to_array(req.format, req.width, req.height, req.image_data))
            embedding = segmenter.embed(image)
            self.cache.put(key, embedding)
        progress(0.9, "decode")
        points = np.asarray(prompt.points, np.float32).reshape(-1, 2) if prompt.points else None
        labels = np.asarray(prompt.labels, np.int64) if prompt.points else None
        mask = segmenter.predict(embedding, box=prompt.box, points=points, labels=labels)
        return mask, cached

    def _loaded(self, progress: Callable[[float, str], None]) -> ServedSegmenter:
        """The segmenter, loaded on first use. A failed load (weights missing and no network)
        is tried again by the next request: the user may have gone online since."""
        if self.segmenter is not None:
            return self.segmenter
        progress(0.0, "load")
        log.info("loading segmenter %s on %s", self.name, self.device_name)
        try:
            self.segmenter = self._loader(self.name, self.device_name)
        except (WeightsError, CheckpointError, OSError, ValueError) as exc:
            self.load_error = f"cannot load the segmenter {self.name}: {one_line(exc)}"
            log.warning("%s", self.load_error)
            raise SegmenterUnavailable(self.load_error) from exc
        self.load_error = None
        log.info("segmenter: %s", self.segmenter.description)
        return self.segmenter
