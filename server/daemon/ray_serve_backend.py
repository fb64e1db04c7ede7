"""``lama-server --ray``: the router's jobs run on a Ray Serve deployment instead of local workers.

The router does not change: it feeds this backend (an
:class:`~lama_server.daemon.backend.InpaintBackend`) from the same bounded queue, through
:attr:`RayServeBackend.concurrency` threads, each passing one job to Serve at a time. Serve does
the placement, the replicas, autoscaling and batching inside each replica
(:mod:`~lama_server.daemon.ray_replica`); nothing here schedules.

The Ray driver lives in a child process (:mod:`~lama_server.daemon.ray_bridge`), not in the
server: a Ray driver exits when it loses its cluster for a minute, and the local endpoint must
outlive the cluster. Between the two runs one anonymous pipe (a socketpair only these two
processes hold). When the child is gone every job gets ``unavailable`` at once and a new child
is started (at most every :data:`RESTART_INTERVAL_S`), so the server picks the cluster up again
when it is back.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Hashable

from lama_server.daemon.backend import Emit
from lama_server.daemon.ray_messages import RaySettings, RegionOutcome
from lama_server.daemon.scheduler import Job
from lama_server.wire import protocol
from lama_server.wire.protocol import Request

log = logging.getLogger("lama_server")

#: Seconds between attempts to start a new bridge after the old one died.
RESTART_INTERVAL_S = 10.0
#: The parent's own bound beyond the bridge's request timeout: never a hang, even if the
#: bridge itself stops answering.
BRIDGE_GRACE_S = 5.0
#: Jobs in flight per replica and per batch slot: while one batch computes, the next waits
#: at the replica instead of in our queue, so the batch fills.
IN_FLIGHT_PER_SLOT = 2
MAX_CONCURRENCY = 64


class RayServeError(RuntimeError):
    """The deployment could not be started (the message is one line for the user)."""


def unavailable(message: str, request_id: str | None) -> bytes:
    """The final reply when no replica can run a request."""
    return protocol.error_reply("unavailable", message, request_id)


class RayServeBackend:
    """Hands jobs to the Serve deployment through the bridge process; see the module doc."""

    batch_wait = 0.0
    max_batch = 1  # each job goes to Serve alone; @serve.batch gathers them in the replica

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        slots = settings.most_replicas * max(1, settings.spec.max_batch)
        self.concurrency = min(MAX_CONCURRENCY, IN_FLIGHT_PER_SLOT * slots)
        self.backend = settings.spec.backend
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._keys = itertools.count()
        self._waiting: dict[int, queue.Queue] = {}
        self._status: dict = {}
        self._conn = None
        self._process = None
        self._last_start = 0.0
        self._description = self._start()  # raises RayServeError
        self.model_name = self._description["model"]
        self.precision = self._description["precision"]
        where = settings.address or "a Ray instance on this machine"
        self.path = f"{self._description['path']} on Ray Serve ({where})"

    @property
    def device(self) -> str:
        return f"ray:{self.settings.spec.device}"

    @property
    def refine_available(self) -> bool:
        return bool(self._description["refine"])

    def batch_key(self, request: Request) -> Hashable | None:
        return None

    def run_batch(self, jobs: list[Job], emit: Emit) -> list[bytes]:
        return [self.run(job, emit) for job in jobs]

    def devices_info(self) -> list[dict]:
        """One line per replica this server has used, with its node, device and load, and the
        deployment's replica counts by state (Serve's status API)."""
        with self._state_lock:
            status, alive = dict(self._status), self._alive()
        if not alive:
            return [{"device": self.device, "state": "unavailable",
                     "error": "no connection to the Ray cluster"}]  # fmt: skip
        deployment = {"device": self.device, "application": status.get("application", "?"),
                      "replica_states": status.get("replica_states", {})}  # fmt: skip
        return [deployment, *status.get("replicas", [])]

    def run(self, job: Job, emit: Emit) -> bytes:
        """Pass one job to Serve and wait for its outcome; never raises, never waits past the
        request timeout for a replica to take it."""
        req = job.request
        key = next(self._keys)
        inbox: queue.Queue = queue.Queue()
        with self._state_lock:
            self._waiting[key] = inbox
        try:
            if not self._send(("run", key, _replica_request(req))):
                self._restart_soon()
                return unavailable("the Ray cluster cannot be reached; try again later", req.id)
            return self._await(job, key, inbox, emit)
        except Exception:
            log.exception("inpaint %s through Ray Serve failed", req.id)
            return protocol.error_reply("internal", "internal error while inpainting", req.id)
        finally:
            with self._state_lock:
                self._waiting.pop(key, None)

    def _await(self, job: Job, key: int, inbox: queue.Queue, emit: Emit) -> bytes:
        """The bridge's messages about one job, until its final reply."""
        from lama_server.wire.replies import ok_reply

        req = job.request
        deadline = time.monotonic() + self.settings.request_timeout + BRIDGE_GRACE_S
        sent = time.monotonic()
        started = False
        while True:
            if job.cancelled.is_set():
                self._send(("cancel", key))  # Serve cancels it; a late outcome is dropped
                return protocol.error_reply("cancelled", "the request was cancelled", req.id)
            try:
                message = inbox.get(timeout=0.05)
            except queue.Empty:
                if not started and time.monotonic() > deadline:
                    self._send(("cancel", key))
                    return unavailable("the Ray bridge did not answer in time", req.id)
                continue
            _, _, kind, detail = message  # ("job", key, kind, detail)
            if kind == "started":
                started = True
                emit(job, protocol.progress_reply(req.id, 0.05, "inpaint"))  # a replica has it
            elif kind == "failed":
                return protocol.error_reply(detail[0], detail[1], req.id)
            elif isinstance(detail, RegionOutcome):
                emit(job, protocol.progress_reply(req.id, 1.0, "done"))
                queue_ms = (sent - job.received) * 1000 + detail.queue_ms
                return bytes(ok_reply(req, detail.result, queue_ms, detail.model_ms))
            else:
                return bytes(detail)  # the replica's own error reply (bad_request, internal)

    # -- the bridge process ---------------------------------------------------------------

    def _start(self) -> dict:
        """Start the bridge and wait until a replica has loaded the model; its description."""
        from lama_server.daemon.ray_bridge import run_bridge

        self._last_start = time.monotonic()
        context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        mine, theirs = context.Pipe()
        process = context.Process(target=run_bridge, args=(theirs, self.settings),
                                  name="lama-ray-bridge", daemon=True)  # fmt: skip
        process.start()
        theirs.close()
        timeout = self.settings.start_timeout
        try:
            if not mine.poll(timeout):
                raise RayServeError(
                    f"no Ray Serve replica was ready within {timeout:g} s (does the cluster "
                    "have the CPUs/GPUs the replicas ask for?)"
                )
            kind, detail = mine.recv()
        except EOFError:
            kind, detail = "failed", "the Ray bridge process exited while starting"
        except RayServeError:
            process.kill()
            raise
        if kind != "ready":
            process.join(5)
            raise RayServeError(f"cannot deploy on Ray Serve: {detail}")
        with self._state_lock:
            self._conn, self._process = mine, process
        threading.Thread(target=self._read, args=(mine,), name="lama-ray-reader",
                         daemon=True).start()  # fmt: skip
        return detail

    def _read(self, conn) -> None:
        """The reader thread: hand each message to the job it is about."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            with self._state_lock:
                if message[0] == "status":
                    self._status = message[1]
                    continue
                inbox = self._waiting.get(message[1])
            if inbox is not None:  # else a cancelled job's late news: dropped
                inbox.put(message)
        log.warning("lost the Ray bridge: requests get 'unavailable' until it is back")
        with self._state_lock:
            if self._conn is conn:
                self._conn = None
            waiting = list(self._waiting.items())
        lost = ("unavailable", "the connection to the Ray cluster was lost; try again")
        for key, inbox in waiting:
            inbox.put(("job", key, "failed", lost))

    def _alive(self) -> bool:
        return self._conn is not None and self._process is not None and self._process.is_alive()

    def _send(self, message: tuple) -> bool:
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return False
            try:
                conn.send(message)
                return True
            except (OSError, ValueError):
                return False

    def _restart_soon(self) -> None:
        """Start a new bridge in the background unless one started a moment ago."""
        with self._state_lock:
            if time.monotonic() - self._last_start < RESTART_INTERVAL_S:
                return
            self._last_start = time.monotonic()
        threading.Thread(target=self._restart, name="lama-ray-restart", daemon=True).start()

    def _restart(self) -> None:
        old = self._process
        if old is not None:
            old.kill()
        try:
            self._start()
            log.info("reconnected to the Ray cluster")
        except RayServeError as exc:
            log.warning("the Ray cluster is still unavailable: %s", exc)

    def close(self) -> None:
        """Remove the deployment (its replicas free their CPUs/GPUs) and end the bridge."""
        self._send(("stop", -1))
        process = self._process
        if process is not None:
            process.join(30)
            if process.is_alive():
                process.kill()


def _replica_request(request: Request) -> Request:
    """A copy of ``request`` that can travel to a replica: pixels as bytes (not views of a
    received frame or of the client's pixel file), no token, no file names."""
    from dataclasses import replace

    return replace(
        request, token="", image_data=bytes(request.image_data),
        mask_data=bytes(request.mask_data), image_file=None, mask_file=None, result_view=None,
    )  # fmt: skip
