"""The worker: owns the model and the device, turns a job into reply bytes.

It runs in its own thread, takes jobs from the :class:`~lama_server.scheduler.Scheduler`, and
hands every message (progress and the final reply) to ``emit``, which forwards it to the
socket thread: only that thread touches the ROUTER socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from lama_model.inpaint import InpaintOptions, inpaint
from lama_model.refine import RefineError, refinable_generator

from . import protocol
from .pixel_formats import FORMATS, array_to_wire, wire_to_array
from .scheduler import Job

log = logging.getLogger("lama_server")

Emit = Callable[[Job, bytes], None]


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
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.precision = precision
        self.backend = backend
        self.path = path or precision  # the inference path in words, e.g. "fp32+fused"
        self.refine_error = _refine_error(model)  # None when refinement is available

    @property
    def refine_available(self) -> bool:
        """Whether ``options.refine`` can be honoured (the eager generator is at hand)."""
        return self.refine_error is None

    @property
    def device(self) -> torch.device:
        return getattr(self.model, "device", torch.device("cpu"))

    def warm_up(self, size: int = 256) -> float:
        """One forward at a typical size so the first user request is not the slow one."""
        start = time.perf_counter()
        image = np.full((size, size, 3), 128, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[size // 4 : size // 2, size // 4 : size // 2] = 255
        inpaint(self.model, image, mask, InpaintOptions(strategy="original"))
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
            image = wire_to_array(req.format, req.width, req.height, req.image_data)
            mask = np.frombuffer(req.mask_data, dtype=np.uint8).reshape(req.height, req.width)
            opts = req.options
            if opts.refine and self.refine_error:
                return protocol.error_reply("bad_request", self.refine_error, req.id)
            options = InpaintOptions(
                mask_grow=opts.mask_grow, feather=opts.feather, strategy=opts.strategy,
                refine=opts.refine,
            )  # fmt: skip
            result = self._inpaint_with_oom_fallback(image, mask, options, progress)
            out = (
                layer_pixels(result.image, result.alpha, req.format)
                if opts.output == "layer"
                else result.image
            )
            data = array_to_wire(req.format, out)
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
        model_ms = _ms(started)
        log.info(
            "inpaint %s %dx%d %s strategy=%s grow=%d feather=%d output=%s refine=%s: %.0f ms, "
            "queued %.0f",
            req.id, req.width, req.height, req.format, opts.strategy, opts.mask_grow,
            opts.feather, opts.output, opts.refine, model_ms, queue_ms,
        )  # fmt: skip
        timing = {"queue_ms": round(queue_ms, 1), "model_ms": round(model_ms, 1),
                  "total_ms": round(queue_ms + model_ms, 1)}  # fmt: skip
        image_reply = {"w": req.width, "h": req.height, "format": req.format, "data": data}
        return protocol.encode({"id": req.id, "ok": True, "image": image_reply, "timing": timing})

    def _inpaint_with_oom_fallback(self, image, mask, options, progress):
        try:
            return inpaint(self.model, image, mask, options, progress)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            log.warning("out of GPU memory; retrying with the resize strategy at 512 px")
            cheaper = InpaintOptions(
                mask_grow=options.mask_grow, feather=options.feather, strategy="resize",
                resize_limit=512,
            )  # fmt: skip
            return inpaint(self.model, image, mask, cheaper, progress)


def _refine_error(model: torch.nn.Module) -> str | None:
    try:
        refinable_generator(model)
    except RefineError as exc:
        return str(exc)
    return None


def layer_pixels(result: np.ndarray, alpha: np.ndarray, fmt_name: str) -> np.ndarray:
    """Only the filled pixels: colour from the result, alpha = weight × source alpha."""
    fmt = FORMATS[fmt_name]
    full = 1.0 if fmt.dtype.kind == "f" else float(np.iinfo(fmt.dtype).max)
    layer = result.copy()
    a_index = result.shape[2] - 1  # alpha is last in canonical order (RGBA / YA)
    source_alpha = result[:, :, a_index].astype(np.float32)
    new_alpha = alpha * source_alpha
    if fmt.dtype.kind == "f":
        layer[:, :, a_index] = new_alpha
    else:
        layer[:, :, a_index] = np.clip(np.rint(new_alpha), 0, full).astype(result.dtype)
    layer[alpha == 0] = 0
    return layer


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000
