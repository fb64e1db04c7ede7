"""The worker: owns the model and the device, turns a job into a reply.

It runs in its own thread (one per device), takes jobs from the
:class:`~lama_server.daemon.scheduler.Scheduler`, and hands every message (progress and the final
reply, whose bytes :mod:`~lama_server.wire.replies` builds) to ``emit``, which forwards it to the
socket thread: only that thread touches the ROUTER socket. Requests whose whole image is one
window of the same size may arrive as a batch (:meth:`Worker.batch_key`) and run in one
forward; refinement never batches.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np
import torch

from lama_model.interface import CompileProgress, PrecisionChoice, ServedModel, ServedWrapper
from lama_model.pipeline import (
    InpaintOptions,
    RefineError,
    RegionResult,
    inpaint_region,
    resolved_strategy,
)
from lama_model.pipeline.device import DeviceInpainter, Prepared, forward_batch
from lama_model.pipeline.refine import refinable_generator
from lama_server.daemon.backend import Emit
from lama_server.daemon.scheduler import Job
from lama_server.wire import protocol
from lama_server.wire.pixel_formats import wire_to_array
from lama_server.wire.protocol import Request
from lama_server.wire.replies import ok_reply

log = logging.getLogger("lama_server")

#: Turns a finished region into the job's final reply (``ok_reply`` here; a Ray Serve replica
#: returns the region itself and the server that took the request builds the reply).
BuildReply = Callable[[Request, RegionResult, float, float], Any]


class JobCancelled(Exception):
    """Raised from the progress callback to stop a cancelled job."""


class Worker:
    """Runs inpaint jobs on one model."""

    def __init__(
        self,
        model: torch.nn.Module,
        model_name: str,
        precision: str,
        backend: str = "torch",
        path: str | None = None,
        max_batch: int = 1,
        batch_wait: float = 0.002,
        device_lock: threading.Lock | None = None,
        build_reply: BuildReply = ok_reply,
        describe: Callable[[], tuple[str, str]] | None = None,
    ) -> None:
        # Workers sharing a GPU share ``device_lock``: one forward at a time there (a second
        # would only compete for the same chip and double the activation memory), while the
        # other worker's host work (decoding, uploads, the reply) overlaps it.
        if device_lock is not None:
            model = SerializedModel(model, device_lock)
        self.model = model
        self.model_name = model_name
        # (precision, the inference path in words, e.g. "fp32+fused"); ``describe`` reads them
        # afresh from a model that can switch paths (auto measuring in the background).
        self._described = (precision, path or precision)
        self.describe = describe
        self.backend = backend
        self.max_batch = max(1, max_batch)
        self.batch_wait = batch_wait
        # The tensor request path with its pinned buffers, kept for the worker's lifetime.
        # CPU models keep the NumPy path for single requests (it is as fast there).
        self.runner = DeviceInpainter(model)
        self.load = WorkerLoad()
        self.refine_error = _refine_error(model)  # None when refinement is available
        self.build_reply = build_reply

    #: One thread of the router feeds a worker: its device runs one batch at a time.
    concurrency = 1

    @property
    def refine_available(self) -> bool:
        """Whether ``options.refine`` can be honoured (the eager generator is at hand)."""
        return self.refine_error is None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def precision(self) -> str:
        return (self.describe() if self.describe else self._described)[0]

    @property
    def path(self) -> str:
        return (self.describe() if self.describe else self._described)[1]

    def load_info(self) -> dict:
        """This worker's line in ``info``'s ``devices``."""
        line = {"device": str(self.device), "path": self.path, "max_batch": self.max_batch,
                **self.load.as_dict()}  # fmt: skip
        compiler = self.model.compiler
        if compiler is not None:  # background compilation (lama_model.accel.gpu_model)
            line["compile"] = {"ready": compiler.ready_shapes, "pending": compiler.pending_shapes}
        choice = self.model.choice
        if choice is not None and choice.window is not None:  # what auto measured, and where
            line["measured"] = {"window": choice.window, "seconds": dict(choice.seconds or ())}
        return line

    def devices_info(self) -> list[dict]:
        """This worker's lines in ``info``'s ``devices``: its one device."""
        return [self.load_info()]

    def batch_key(self, request: Request) -> Hashable | None:
        """Requests with equal keys may share one forward; None: this one runs alone.

        Only requests that run their whole image as one window at full size (``original``, or
        ``auto`` up to the request's resize limit) batch, keyed by size; refinement (issue 13)
        never does.
        """
        opts = request.options
        if self.max_batch <= 1 or opts.refine:
            return None
        strategy = resolved_strategy(pipeline_options(opts), request.height, request.width)
        whole = strategy == "original"
        return (request.width, request.height) if whole else None

    def run_batch(self, jobs: list[Job], emit: Emit) -> list[bytes]:
        """Run jobs (of one batch key) together; one final reply per job, in order."""
        started = time.monotonic()
        self.load.started(len(jobs))
        try:
            if len(jobs) == 1:
                return [self.run(jobs[0], emit)]
            return self._run_together(jobs, emit)
        finally:
            self.load.finished(len(jobs), time.monotonic() - started)

    def warm_up(self, size: int = 256) -> float:
        """One forward at a typical size so the first user request is not the slow one."""
        start = time.perf_counter()
        image = np.full((size, size, 3), 128, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[size // 4 : size // 2, size // 4 : size // 2] = 255
        self._inpaint(image, mask, InpaintOptions(strategy="original"), None)
        return time.perf_counter() - start

    def run(self, job: Job, emit: Emit) -> bytes:
        """Run one job; returns the final reply (ok or error). Never raises."""
        req = job.request
        started = time.monotonic()
        queue_ms = (started - job.received) * 1000

        def progress(fraction: float, stage: str) -> None:
            if job.cancelled.is_set():
                raise JobCancelled
            emit(job, protocol.progress_reply(req.id, fraction, stage))

        try:
            if req.options.refine and self.refine_error:
                return protocol.error_reply("bad_request", self.refine_error, req.id)
            image, mask, options = _decode(req)
            result = self._inpaint_with_oom_fallback(image, mask, options, progress)
            reply = self.build_reply(req, result, queue_ms, _ms(started))
        except JobCancelled:
            log.info("inpaint %s cancelled after %.0f ms", req.id, _ms(started))
            return protocol.error_reply("cancelled", "the request was cancelled", req.id)
        except torch.cuda.OutOfMemoryError:
            log.warning("inpaint %s: out of GPU memory even with the resize strategy", req.id)
            return protocol.error_reply(
                "out_of_memory",
                "the GPU ran out of memory for this window; select a smaller area",
                req.id,
            )
        except Exception:
            log.exception("inpaint %s failed", req.id)
            return protocol.error_reply("internal", "internal error while inpainting", req.id)
        opts = req.options
        log.info(
            "inpaint %s %dx%d %s strategy=%s resize_limit=%d grow=%d feather=%d output=%s "
            "refine=%s pixels=%s: %.0f ms, queued %.0f",
            req.id, req.width, req.height, req.format, opts.strategy, opts.resize_limit,
            opts.mask_grow, opts.feather, opts.output, opts.refine,
            "file" if req.image_file else "inline", _ms(started), queue_ms,
        )  # fmt: skip
        return reply

    def _run_together(self, jobs: list[Job], emit: Emit) -> list[bytes]:
        """Prepare every job, run their windows in one forward, finish each."""
        replies: dict[int, bytes] = {}
        prepared: dict[int, Prepared] = {}
        queue_ms = {}
        started = time.monotonic()
        for i, job in enumerate(jobs):
            req = job.request
            queue_ms[i] = (started - job.received) * 1000
            if job.cancelled.is_set():
                replies[i] = protocol.error_reply("cancelled", "the request was cancelled", req.id)
                continue
            try:
                image, mask, options = _decode(req)
                emit(job, protocol.progress_reply(req.id, 0.0, "prepare"))
                prepared[i] = self.runner.prepare(image, mask, options)
            except Exception:
                log.exception("inpaint %s failed", req.id)
                replies[i] = protocol.error_reply(
                    "internal", "internal error while inpainting", req.id
                )
        single = {i: p for i, p in prepared.items() if len(p.windows) == 1}
        shapes = {p.windows[0].shape for p in single.values()}
        try:
            if len(shapes) == 1 and len(single) > 1:
                for i in single:
                    emit(jobs[i], protocol.progress_reply(jobs[i].request.id, 0.05, "inpaint"))
                forward_batch(self.model, [p.windows[0] for p in single.values()])
            for p in prepared.values():
                for window in p.windows:
                    if window.prediction is None:
                        self.runner.forward_window(window)
        except Exception as exc:  # e.g. out of memory for the batch: one by one instead
            log.warning("batched forward of %d failed (%s); running one by one", len(jobs), exc)
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            return [replies[i] if i in replies else self.run(job, emit)
                    for i, job in enumerate(jobs)]  # fmt: skip
        for i, p in prepared.items():
            req = jobs[i].request
            try:
                result = self.runner.finish_region(p)
                replies[i] = self.build_reply(req, result, queue_ms[i], _ms(started))
            except Exception:
                log.exception("inpaint %s failed", req.id)
                replies[i] = protocol.error_reply(
                    "internal", "internal error while inpainting", req.id
                )
        log.info("batch of %d %dx%d: %.0f ms", len(jobs), jobs[0].request.width,
                 jobs[0].request.height, _ms(started))  # fmt: skip
        return [replies[i] for i in range(len(jobs))]

    def _inpaint(self, image, mask, options, progress) -> RegionResult:
        # Only the touched region comes back: the reply patches it into the request's pixels.
        if options.refine and isinstance(self.model, SerializedModel):
            with self.model.exclusive() as model:  # a refinement holds the shared GPU throughout
                return inpaint_region(model, image, mask, options, progress)
        if self.device.type == "cuda" and not options.refine:
            return self.runner.region(image, mask, options, progress)  # reuses pinned buffers
        return inpaint_region(self.model, image, mask, options, progress)

    def _inpaint_with_oom_fallback(self, image, mask, options, progress):
        try:
            return self._inpaint(image, mask, options, progress)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            log.warning("out of GPU memory; retrying with the resize strategy at 512 px")
            cheaper = InpaintOptions(
                mask_grow=options.mask_grow, feather=options.feather, strategy="resize",
                resize_limit=min(512, options.resize_limit),  # never larger than asked for
            )  # fmt: skip
            return self._inpaint(image, mask, cheaper, progress)


class SerializedModel(ServedWrapper):
    """A :class:`~lama_model.interface.ServedModel` whose forwards hold a lock shared with the
    other workers on the same device; it answers the contract from the wrapped model
    (:class:`~lama_model.interface.ServedWrapper` gives its device, ``scripted`` and eager
    generator)."""

    def __init__(self, model: ServedModel, lock: threading.Lock) -> None:
        super().__init__()
        self.inner = model
        self._lock = lock

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with self._lock:
            return self.inner(image, mask)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[ServedModel]:
        """Hold the device for a longer piece of work (a refinement); yields the bare model."""
        with self._lock:
            yield self.inner

    # The rest of ServedModel, read from the wrapped model each time: auto measuring in the
    # background may switch its path, and a copy taken here would go stale.
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def size_multiple(self) -> int:
        return self.inner.size_multiple

    @property
    def choice(self) -> PrecisionChoice | None:
        return self.inner.choice

    @property
    def compiler(self) -> CompileProgress | None:
        return self.inner.compiler

    @property
    def input_device(self) -> torch.device:
        return self.inner.input_device

    @property
    def precision(self) -> str:
        return self.inner.precision

    @property
    def description(self) -> str:
        return self.inner.description


class WorkerLoad:
    """Counters for ``info``'s per-device load (written by the worker thread only)."""

    def __init__(self) -> None:
        self.running = 0
        self.completed = 0
        self.batches = 0
        self.largest_batch = 0
        self.busy_s = 0.0
        self.since = time.monotonic()

    def started(self, jobs: int) -> None:
        self.running = jobs

    def finished(self, jobs: int, seconds: float) -> None:
        self.running = 0
        self.completed += jobs
        self.batches += 1
        self.largest_batch = max(self.largest_batch, jobs)
        self.busy_s += seconds

    def as_dict(self) -> dict:
        up = max(time.monotonic() - self.since, 1e-9)
        return {"running": self.running, "completed": self.completed, "batches": self.batches,
                "largest_batch": self.largest_batch,
                "utilisation": round(min(1.0, self.busy_s / up), 3)}  # fmt: skip


def _decode(req: Request) -> tuple[np.ndarray, np.ndarray, InpaintOptions]:
    image = wire_to_array(req.format, req.width, req.height, req.image_data)
    mask = np.frombuffer(req.mask_data, dtype=np.uint8).reshape(req.height, req.width)
    return image, mask, pipeline_options(req.options)


def pipeline_options(opts: protocol.RequestOptions) -> InpaintOptions:
    """The pipeline's options for a request's validated ``options`` (the one translation)."""
    return InpaintOptions(
        mask_grow=opts.mask_grow, feather=opts.feather, strategy=opts.strategy,
        resize_limit=opts.resize_limit, refine=opts.refine,
    )  # fmt: skip


def _refine_error(model: torch.nn.Module) -> str | None:
    try:
        refinable_generator(model)
    except RefineError as exc:
        return str(exc)
    return None


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000
