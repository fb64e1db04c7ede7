"""The role the router hands inpaint jobs to: a local worker or a Ray Serve deployment.

The router does not know which one it feeds: it starts :attr:`InpaintBackend.concurrency`
threads per backend, each taking jobs from the one bounded queue (gathered by
:meth:`InpaintBackend.batch_key` up to :attr:`InpaintBackend.max_batch`) and sending whatever
:meth:`InpaintBackend.run_batch` emits. :class:`~lama_server.daemon.worker.Worker` runs the model
on a local device; :class:`~lama_server.daemon.ray_serve_backend.RayServeBackend` passes each job
to a Ray Serve deployment (``lama-server --ray``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

from lama_server.daemon.scheduler import Job
from lama_server.wire.protocol import Request

Emit = Callable[[Job, bytes], None]


class InpaintBackend(Protocol):
    """Runs inpaint jobs for the router; ``info`` reports its fields."""

    model_name: str
    precision: str
    backend: str
    path: str  # the inference path in words, e.g. "fp32+fused"
    max_batch: int  # jobs of one batch key the router gathers for one run_batch call
    batch_wait: float  # seconds the router waits for more jobs of the first one's key
    concurrency: int  # router threads feeding this backend at once

    @property
    def device(self) -> object:
        """Where it computes (``str()`` of it is what ``info`` shows)."""

    @property
    def refine_available(self) -> bool:
        """Whether ``options.refine`` can be honoured."""

    def batch_key(self, request: Request) -> Hashable | None:
        """Requests with equal keys may run together; None: this one runs alone."""

    def run_batch(self, jobs: list[Job], emit: Emit) -> list[bytes]:
        """Run the jobs; one final reply per job, in order; progress goes to ``emit``.

        Never raises: a failure is an error reply."""

    def devices_info(self) -> list[dict]:
        """Its lines in ``info``'s ``devices`` (a worker: its device; Ray: the replicas)."""
