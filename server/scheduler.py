"""A bounded queue of inpaint jobs between the socket thread and the worker.

A full queue refuses at once (the client hears ``busy`` instead of waiting blind); queued
jobs can be cancelled before they start, the running one at its next progress point.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

from .protocol import Request


@dataclass
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
        """Bytes of pixels this job holds while it waits."""
        return len(self.request.image_data) + len(self.request.mask_data)


class Scheduler:
    """Thread-safe FIFO with a capacity; one consumer (the worker)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        self.capacity = capacity
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._closed = False

    def submit(self, job: Job) -> bool:
        """Queue a job; False if the queue is full or closed."""
        with self._cond:
            if self._closed or len(self._jobs) >= self.capacity:
                return False
            self._jobs.append(job)
            self._cond.notify()
            return True

    def next_job(self, timeout: float) -> Job | None:
        """Worker side: the next job, or None after ``timeout`` or once closed and empty."""
        with self._cond:
            self._running = None
            end = time.monotonic() + timeout
            while not self._jobs:
                remaining = end - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._running = self._jobs.popleft()
            return self._running

    def finished(self) -> None:
        """Worker side: the running job is done."""
        with self._cond:
            self._running = None
            self._cond.notify_all()

    def cancel(self, client: bytes, request_id: str) -> Job | None:
        """Cancel a queued or running job of this client. Returns it if found.

        A queued job is removed (the caller replies ``cancelled``); a running one is flagged
        and the worker stops at its next progress point.
        """
        with self._cond:
            for job in self._jobs:
                if job.request.id == request_id and job.client == client:
                    self._jobs.remove(job)
                    job.cancelled.set()
                    return job
            running = self._running
            if running and running.request.id == request_id and running.client == client:
                running.cancelled.set()
                return running
        return None

    def drop_client(self, client: bytes) -> tuple[list[Job], Job | None]:
        """A client left: remove its queued jobs and flag its running one as cancelled.

        Returns (the removed queued jobs, the running job if it was this client's).
        """
        with self._cond:
            dropped = [job for job in self._jobs if job.client == client]
            for job in dropped:
                self._jobs.remove(job)
                job.cancelled.set()
            running = self._running
            if running is not None and running.client == client and not running.cancelled.is_set():
                running.cancelled.set()
                return dropped, running
            return dropped, None

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
            return self._running is job

    @property
    def busy(self) -> bool:
        """True while a job is queued or running."""
        with self._cond:
            return bool(self._jobs) or self._running is not None

    def __len__(self) -> int:
        with self._cond:
            return len(self._jobs)
