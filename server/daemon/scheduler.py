"""A bounded queue of inpaint jobs between the socket thread and the workers.

A full queue refuses at once (the client hears ``busy`` instead of waiting blind); queued
jobs can be cancelled before they start, the running ones at their next progress point.
Several workers (one per device) may consume it; :meth:`Scheduler.next_batch` gathers
queued jobs of the same batch key for one batched forward (dynamic batching).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from lama_server.wire.protocol import Request


@dataclass(eq=False)  # identity: two jobs are never "equal" (and requests hold MBs)
class Job:
    """One accepted inpaint request and where its replies go."""

    request: Request
    envelope: list[bytes]  # ROUTER routing frames, echoed in every reply
    received: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def client(self) -> bytes:
        return self.envelope[0]

    @property
    def nbytes(self) -> int:
        """Bytes of pixels this job holds in memory while it waits (pixel files: none, the
        client's file holds them)."""
        req = self.request
        return (0 if req.image_file else len(req.image_data)) + (
            0 if req.mask_file else len(req.mask_data)
        )


BatchKey = Callable[[Request], Hashable | None]


class Scheduler:
    """Thread-safe FIFO with a capacity; one or more consumers (the workers)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        self.capacity = capacity
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._running: dict[int, list[Job]] = {}  # consumer thread id → its jobs
        self._closed = False

    def submit(self, job: Job) -> bool:
        """Queue a job; False if the queue is full or closed."""
        with self._cond:
            if self._closed or len(self._jobs) >= self.capacity:
                return False
            self._jobs.append(job)
            self._cond.notify_all()
            return True

    def next_job(self, timeout: float) -> Job | None:
        """Worker side: the next job, or None after ``timeout`` or once closed and empty."""
        batch = self.next_batch(timeout)
        return batch[0] if batch else None

    def next_batch(
        self,
        timeout: float,
        key: BatchKey | None = None,
        max_batch: int = 1,
        wait: float = 0.0,
    ) -> list[Job]:
        """Worker side: the oldest job plus queued jobs with the same ``key`` (empty on timeout).

        Jobs whose key is None run alone. Waits up to ``wait`` seconds after the first job for
        more of its kind (a few ms: concurrent clients' requests arrive close together), never
        beyond ``max_batch``. The jobs count as running for this thread until
        :meth:`finished` or its next call here.
        """
        me = threading.get_ident()
        with self._cond:
            self._running.pop(me, None)
            end = time.monotonic() + timeout
            while not self._jobs:
                remaining = end - time.monotonic()
                if self._closed or remaining <= 0:
                    return []
                self._cond.wait(remaining)
            first = self._jobs.popleft()
            batch = [first]
            self._running[me] = batch
            kind = key(first.request) if key and max_batch > 1 else None
            if kind is None:
                return batch
            gather_end = time.monotonic() + wait
            while len(batch) < max_batch:
                for job in [j for j in self._jobs if key(j.request) == kind]:
                    if len(batch) >= max_batch:
                        break
                    self._jobs.remove(job)
                    batch.append(job)
                remaining = gather_end - time.monotonic()
                if len(batch) >= max_batch or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            return batch

    def finished(self) -> None:
        """Worker side: this thread's running jobs are done."""
        with self._cond:
            self._running.pop(threading.get_ident(), None)
            self._cond.notify_all()

    def cancel(self, client: bytes, request_id: str) -> Job | None:
        """Cancel a queued or running job of this client. Returns it if found.

        A queued job is removed (the caller replies ``cancelled``); a running one is flagged
        and its worker stops at its next progress point.
        """
        with self._cond:
            for job in self._jobs:
                if job.request.id == request_id and job.client == client:
                    self._jobs.remove(job)
                    job.cancelled.set()
                    return job
            for running in self._running.values():
                for job in running:
                    if job.request.id == request_id and job.client == client:
                        job.cancelled.set()
                        return job
        return None

    def drop_client(self, client: bytes) -> tuple[list[Job], list[Job]]:
        """A client left: remove its queued jobs and flag its running ones as cancelled.

        Returns (the removed queued jobs, its running jobs newly flagged).
        """
        with self._cond:
            dropped = [job for job in self._jobs if job.client == client]
            for job in dropped:
                self._jobs.remove(job)
                job.cancelled.set()
            stopping = [
                job
                for running in self._running.values()
                for job in running
                if job.client == client and not job.cancelled.is_set()
            ]
            for job in stopping:
                job.cancelled.set()
            return dropped, stopping

    def queued(self) -> list[Job]:
        """A snapshot of the waiting jobs, oldest first."""
        with self._cond:
            return list(self._jobs)

    @property
    def queued_bytes(self) -> int:
        """Pixel bytes held by waiting jobs."""
        with self._cond:
            return sum(job.nbytes for job in self._jobs)

    def close(self) -> list[Job]:
        """Refuse new jobs; returns the jobs still queued (they will not run)."""
        with self._cond:
            self._closed = True
            left = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
            return left

    def is_running(self, job: Job) -> bool:
        with self._cond:
            return any(j is job for running in self._running.values() for j in running)

    @property
    def running(self) -> int:
        """Jobs being worked on now, over all workers."""
        with self._cond:
            return sum(len(r) for r in self._running.values())

    @property
    def busy(self) -> bool:
        """True while a job is queued or running."""
        with self._cond:
            return bool(self._jobs) or any(self._running.values())

    def __len__(self) -> int:
        with self._cond:
            return len(self._jobs)
