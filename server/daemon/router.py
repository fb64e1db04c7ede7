"""The ZeroMQ side of lama-server: one thread owns the ROUTER socket (pyzmq guide style).

The owner thread reads requests, answers the cheap ops (``ping``, ``info``, ``cancel``,
``hello``) itself, queues ``inpaint`` jobs, and forwards whatever the worker threads (one per
device, all fed by the one queue, batching same-size requests) push through an inproc
PUSH/PULL pair. ``segment`` jobs wait in a second queue for the one segment thread, so they
never hold inpainting up. No other thread touches the ROUTER socket.

On loopback endpoints clients reach the ROUTER only through the token gate
(:mod:`~lama_server.daemon.token_gate`), which checks each message's token from its first bytes, so
unauthenticated data never reaches libzmq; the ROUTER then listens in a private folder.
Frames are received without copying and the token is checked again before pixel data is read
(:func:`protocol.decode`). Replies go out with ``ROUTER_MANDATORY``: a send to a client that
has disconnected fails with ``EHOSTUNREACH``, which is how the server learns it left (the
``ROUTER_NOTIFY`` option is a libzmq draft API, absent from the pyzmq wheels): its queued jobs
are dropped and its running job stops at the next progress point. Clients with queued jobs
are probed with a ``queued`` progress message every :data:`PROBE_INTERVAL` seconds.

Gated servers also own a pixel folder (:mod:`~lama_server.wire.pixel_files`): the owner thread
names it in ``hello`` replies, maps the files a request names before queueing it, and sweeps
the folder every :data:`SWEEP_INTERVAL` seconds.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from lama_client.client import canonical_endpoint
from lama_client.wire import NONCE_BYTES, hello_proof
from lama_server import __version__
from lama_server.daemon.auth import prepare_ipc_endpoint, secure_ipc_socket, token_matches
from lama_server.daemon.scheduler import Job, Scheduler
from lama_server.daemon.token_gate import TokenGate, can_gate
from lama_server.wire import protocol
from lama_server.wire.pixel_files import PixelFileError, PixelFolder
from lama_server.wire.pixel_formats import FORMATS
from lama_server.wire.protocol import Limits, ProtocolError

if TYPE_CHECKING:  # not at run time: the worker imports torch, and binding must not wait for it
    from lama_server.daemon.backend import InpaintBackend
    from lama_server.daemon.segmenting import SegmentWorker

log = logging.getLogger("lama_server")
_OUTBOX = "inproc://lama-outbox"
#: Complete messages libzmq may hold per connection before it stops reading from it.
RECV_HWM_PER_CONNECTION = 4
PROBE_INTERVAL = 0.5
SWEEP_INTERVAL = 60.0  # seconds between looks for pixel files that crashed clients left


def _no_files(request_id: str) -> ProtocolError:
    return ProtocolError(
        "no_pixel_file",
        "this server has no pixel folder (it serves remote clients, runs with "
        "--no-pixel-files, or could not make one); send the pixels inline",
        request_id,
    )


def _new_pixel_folder(limits: Limits) -> PixelFolder | None:
    """A fresh pixel folder, or None (and a warning): the server then works without one."""
    try:
        return PixelFolder(max_bytes=limits.max_message_bytes)
    except OSError as exc:
        log.warning("no pixel folder (%s): local clients send pixels inline", exc)
        return None


@dataclass
class ServerConfig:
    endpoint: str
    token: str
    limits: Limits
    curve_secret_key: bytes | None = None  # set for remote (non-loopback) serving
    pixel_files: bool = True  # offer local clients a pixel folder (loopback and ipc:// only)


class Server:
    """Serve workers at ``config.endpoint``: :meth:`bind`, then :meth:`serve` until :meth:`stop`.

    Binding comes first and on its own so that ``lama-server`` learns that the address is
    taken in a moment, before it spends a minute loading and warming a model.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.workers: list[InpaintBackend] = []
        self.scheduler = Scheduler(config.limits.queue)
        # ``segment`` jobs wait in their own queue for their own thread: an encoder pass never
        # holds an inpaint request behind it (see daemon/segmenting.py).
        self.segment_scheduler = Scheduler(config.limits.queue)
        self.segment_worker: SegmentWorker | None = None
        self._stop = threading.Event()
        self._draining = False  # stopping: finishing the work in flight, refusing new work
        self._ctx = zmq.Context()
        self._router: zmq.Socket | None = None
        self._gate: TokenGate | None = None
        self._private_dir: str | None = None
        self.bound_endpoint: str | None = None
        self.pixel_folder: PixelFolder | None = None

    @property
    def worker(self) -> InpaintBackend:
        """The worker whose model and path ``info`` reports."""
        return self.workers[0]

    def stop(self) -> None:
        """Ask the server to finish the request in flight and exit (signal-safe)."""
        self._stop.set()

    def bind(self) -> str:
        """Take the endpoint (``zmq.ZMQError`` or ``OSError`` if it is taken); returns it.

        Loopback clients already reach the ROUTER through the token gate from here on: their
        requests wait in the socket until :meth:`serve` runs.
        """
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 2000)
        router.setsockopt(zmq.MAXMSGSIZE, self.config.limits.max_message_bytes)
        router.setsockopt(zmq.RCVHWM, RECV_HWM_PER_CONNECTION)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a client that left fails
        router.setsockopt(zmq.IPV6, 1)  # else tcp://[::1]:PORT passes the checks but cannot bind
        if self.config.curve_secret_key:
            router.setsockopt(zmq.CURVE_SERVER, 1)
            router.setsockopt(zmq.CURVE_SECRETKEY, self.config.curve_secret_key)
        self._router = router
        public = self.config.endpoint
        try:
            if public.startswith("ipc://"):
                prepare_ipc_endpoint(public)  # refuses to take over a live server's socket
            if self.config.curve_secret_key is None and can_gate(public):
                self._bind_behind_gate(router, public)
            else:
                router.bind(public)
                self.bound_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        except (zmq.ZMQError, OSError):
            self.close()
            raise
        if public.startswith("ipc://"):
            secure_ipc_socket(self.bound_endpoint)
        if self._gate is not None:
            self._gate.start()
        return self.bound_endpoint

    def _bind_behind_gate(self, router: zmq.Socket, public: str) -> None:
        # Clients reach the ROUTER only through the token gate (token_gate.py); the ROUTER
        # itself listens on a socket in a folder only this user can enter.
        self._private_dir = tempfile.mkdtemp(prefix="lama-server-")
        router.bind(f"ipc://{self._private_dir}/router.sock")
        self._gate = TokenGate(
            public,
            router.getsockopt_string(zmq.LAST_ENDPOINT),
            lambda token: token_matches(self.config.token, token),
            self.config.limits,
            self._answer_hello,
        )
        self.bound_endpoint = self._gate.bound_endpoint
        if self.config.pixel_files:
            self.pixel_folder = _new_pixel_folder(self.config.limits)

    def serve(
        self,
        workers: Sequence[InpaintBackend],
        on_ready: Callable[[str], None] | None = None,
        segment_worker: SegmentWorker | None = None,
    ) -> None:
        """Run the workers and the socket loop in the calling thread until stopped; binds
        first unless :meth:`bind` did already. Without ``segment_worker`` a ``segment``
        request gets ``no_segmenter``."""
        if not workers:
            raise ValueError("a server needs at least one worker")
        self.workers = list(workers)
        self.segment_worker = segment_worker
        if self._router is None:
            self.bind()
        outbox = self._ctx.socket(zmq.PULL)
        outbox.bind(_OUTBOX)
        threads = self._start_workers()
        try:
            if on_ready:
                on_ready(self.bound_endpoint)
            self._loop(self._router, outbox, threads)
            self._forward_replies(self._router, outbox)  # what the workers left
        finally:
            self._stop.set()  # whatever ended the loop, the workers stop too
            if not self._draining:  # an error ended the loop: nobody will collect queued work
                self.scheduler.close()
                self.segment_scheduler.close()
            for thread in threads:
                thread.join(timeout=5)
            outbox.close(linger=0)
            self.close()

    def _start_workers(self) -> list[threading.Thread]:
        # A local worker is fed by one thread; a Ray Serve backend by several (jobs in flight
        # on its replicas at once).
        threads = [
            threading.Thread(
                target=self._worker_loop, args=(w, self.scheduler), name=f"lama-worker-{i}.{j}",
                daemon=True,
            )  # fmt: skip
            for i, w in enumerate(self.workers)
            for j in range(w.concurrency)
        ]
        if self.segment_worker is not None:
            threads.append(threading.Thread(
                target=self._worker_loop, args=(self.segment_worker, self.segment_scheduler),
                name="lama-segment", daemon=True,
            ))  # fmt: skip
        for thread in threads:
            thread.start()
        return threads

    def _loop(
        self, router: zmq.Socket, outbox: zmq.Socket, threads: list[threading.Thread]
    ) -> None:
        """The broker's main loop: hand each event to the function that deals with it."""
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(outbox, zmq.POLLIN)
        next_probe = time.monotonic() + PROBE_INTERVAL
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        while True:
            if self._stop.is_set() and not self._draining:
                self._start_draining(router)
            if self._draining and self._drained(threads):
                return
            events = dict(poller.poll(100))
            if outbox in events:
                self._forward_replies(router, outbox)
            if router in events:
                self._read_requests(router)
            if time.monotonic() >= next_probe:
                next_probe = time.monotonic() + PROBE_INTERVAL
                self._probe_waiting_clients(router)
            if self.pixel_folder is not None and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_INTERVAL
                self._sweep_pixel_folder()

    def _start_draining(self, router: zmq.Socket) -> None:
        """Stop asked: refuse what waits in the queue; the request in flight finishes."""
        self._draining = True
        log.info("stopping: finishing the request in flight, refusing new ones")
        for job in [*self.scheduler.close(), *self.segment_scheduler.close()]:
            refusal = protocol.error_reply(
                "shutting_down", "the server is shutting down", job.request.id
            )
            self._reply(router, job.envelope, refusal)

    def _drained(self, threads: list[threading.Thread]) -> bool:
        return (
            not self.scheduler.busy and not self.segment_scheduler.busy
            and not any(t.is_alive() for t in threads)
        )  # fmt: skip

    def _forward_replies(self, router: zmq.Socket, outbox: zmq.Socket) -> None:
        """Send the clients what the workers pushed (progress and final replies)."""
        while True:
            try:
                frames = outbox.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._send(router, frames)

    def _read_requests(self, router: zmq.Socket) -> None:
        """Handle a bounded burst of requests, so the outbox is served again soon."""
        for _ in range(64):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handle(router, frames)
            del frames  # drop the frame (and its memory) before the next one

    def close(self) -> None:
        """Release the sockets, the gate, the private folder and the pixel folder
        (idempotent; :meth:`serve` ends with it, a server that never served needs it)."""
        if self._router is not None:
            self._router.close(linger=2000)
            self._router = None
        if not self._ctx.closed:
            self._ctx.term()  # flushes the last replies into the gate's upstream sockets
        if self._gate is not None:
            self._gate.stop()
            self._gate = None
        if self._private_dir:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None
        if self.pixel_folder is not None:
            self.pixel_folder.remove()
            self.pixel_folder = None

    # ----------------------------------------------------------------------------------------

    def _handle(self, router: zmq.Socket, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            return  # no payload: nothing to answer
        envelope = [frames[0].bytes]  # the routing id of the client's connection
        try:
            if len(frames) > 2:
                raise ProtocolError(
                    "bad_request",
                    f"a request is one frame; this message has {len(frames) - 1}",
                )
            request = protocol.decode(
                frames[1].buffer,
                self.config.limits,
                lambda token: token_matches(self.config.token, token),
            )
            if request.op == "hello":
                self._reply(router, envelope, self._hello_reply(request))
            elif request.op == "ping":
                self._pong(router, envelope, request.id)
            elif request.op == "info":
                self._reply(router, envelope, protocol.encode(
                    {"id": request.id, "ok": True, "info": self.info()}))  # fmt: skip
            elif request.op == "cancel":
                self._cancel(router, envelope, request)
            elif self._draining:
                raise ProtocolError("shutting_down", "the server is shutting down", request.id)
            else:
                scheduler = self._scheduler_for(request)
                self._map_pixel_files(request)
                job = Job(request, envelope)
                limit = self.config.limits.max_queued_bytes
                if scheduler.queued_bytes + job.nbytes > limit:
                    raise ProtocolError(
                        "busy", "the queue holds too many bytes of pixels; try again", request.id
                    )
                if not scheduler.submit(job):
                    raise ProtocolError(
                        "busy",
                        f"the queue is full ({self.config.limits.queue} waiting); try again",
                        request.id,
                    )
                self._reply(router, envelope, protocol.progress_reply(request.id, 0.0, "queued"))
        except ProtocolError as exc:
            if exc.code not in ("busy",):
                log.info("refused request %s: %s (%s)", exc.request_id, exc.code, exc.message)
            self._reply(
                router, envelope, protocol.error_reply(exc.code, exc.message, exc.request_id)
            )
        except Exception:  # the server survives whatever a message does
            log.exception("unexpected error handling a message")
            self._reply(router, envelope, protocol.error_reply("internal", "internal error", None))

    def _scheduler_for(self, request: protocol.Request) -> Scheduler:
        """The queue a request waits in: ``segment`` has its own (and its own thread)."""
        if request.op != "segment":
            return self.scheduler
        if self.segment_worker is None:
            raise ProtocolError(
                "no_segmenter", "this server runs without a segmenter (--no-segment)", request.id
            )
        return self.segment_scheduler

    def _answer_hello(self, frame: memoryview) -> bytes:
        """The reply to a ``hello`` the token gate answers itself (its thread calls this)."""
        try:
            return self._hello_reply(protocol.decode(frame, self.config.limits))
        except ProtocolError as exc:
            return protocol.error_reply(exc.code, exc.message, exc.request_id)

    def _hello_reply(self, request: protocol.Request) -> bytes:
        """Prove that this server knows the token: HMAC of the client's nonce (v1), or (v2) of
        both nonces and this server's endpoint, which binds the proof to the connection: a
        relay on another endpoint cannot pass it on."""
        hello = {
            "id": request.id, "ok": True, "version": __version__,
            "protocol": protocol.VERSION, "protocol_minor": protocol.MINOR_VERSION,
        }  # fmt: skip
        if request.hello_version >= 2:
            server_nonce = os.urandom(NONCE_BYTES)
            endpoint = canonical_endpoint(self.bound_endpoint or self.config.endpoint)
            proof = hello_proof(self.config.token, request.nonce, server_nonce, endpoint)
            hello.update(server_nonce=server_nonce, endpoint=endpoint)
        else:
            proof = hello_proof(self.config.token, request.nonce)
        hello["proof"] = proof
        folder = self.pixel_folder  # read once: the socket thread may replace it
        if folder is not None:
            hello["pixel_dir"] = str(folder.path)
        return protocol.encode(hello)

    def _pong(self, router: zmq.Socket, envelope: list[bytes], request_id: str) -> None:
        """``pong`` while serving; ``shutting_down`` while draining, so that a client (or
        ``lama-server ping``) does not take a server that is about to exit for a ready one."""
        if self._draining:
            raise ProtocolError("shutting_down", "the server is shutting down", request_id)
        pong = {"id": request_id, "ok": True, "pong": True, "version": __version__}
        self._reply(router, envelope, protocol.encode(pong))

    def _sweep_pixel_folder(self) -> None:
        """Remove files idle for an hour; replace the folder if someone deleted it."""
        folder = self.pixel_folder
        if not folder.intact():
            log.warning("the pixel folder %s was removed or replaced; making a new one",
                        folder.path)  # fmt: skip
            folder.remove()
            self.pixel_folder = _new_pixel_folder(self.config.limits)
            return
        if removed := folder.sweep():
            log.info("removed %d pixel file(s) nobody wrote to for an hour", removed)

    def _map_pixel_files(self, request: protocol.Request) -> None:
        """Map a request's pixel files: its pixels become views of the client's file."""
        if request.image_file is None and request.mask_file is None:
            return
        if self.pixel_folder is None:
            raise _no_files(request.id)
        try:
            if request.image_file is not None:
                view = self.pixel_folder.open(request.image_file)
                request.image_data, request.result_view = view.toreadonly(), view
            if request.mask_file is not None:
                request.mask_data = self.pixel_folder.open(request.mask_file).toreadonly()
        except PixelFileError as exc:
            raise ProtocolError("no_pixel_file", str(exc), request.id) from None

    def _cancel(self, router: zmq.Socket, envelope: list[bytes], request) -> None:
        scheduler = self.scheduler
        job = scheduler.cancel(envelope[0], request.target)
        if job is None:
            scheduler = self.segment_scheduler
            job = scheduler.cancel(envelope[0], request.target)
        found = job is not None
        self._reply(router, envelope, protocol.encode(
            {"id": request.id, "ok": True, "cancelled": found}))  # fmt: skip
        if found and not scheduler.is_running(job):
            # Removed from the queue before it started: its final reply comes from here.
            self._reply(router, job.envelope, protocol.error_reply(
                "cancelled", "the request was cancelled", job.request.id))  # fmt: skip

    def _reply(self, router: zmq.Socket, envelope: list[bytes], payload: bytes) -> None:
        self._send(router, [*envelope, payload])

    def _send(self, router: zmq.Socket, frames: list[bytes]) -> None:
        """Send to a client; one that has disconnected loses its queued and running work."""
        try:
            router.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            log.debug("client not reading (its queue is full): reply dropped")
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self._client_left(router, frames[0])

    def _client_left(self, router: zmq.Socket, client: bytes) -> None:
        dropped, running = self.scheduler.drop_client(client)
        segment_dropped, segment_running = self.segment_scheduler.drop_client(client)
        dropped, running = dropped + segment_dropped, running + segment_running
        if dropped or running:
            log.info(
                "a client disconnected: dropped %d queued request(s), stopping %d running",
                len(dropped), len(running),
            )  # fmt: skip

    def _probe_waiting_clients(self, router: zmq.Socket) -> None:
        """Tell each waiting client it is still queued; a send that fails means it left."""
        for job in [*self.scheduler.queued(), *self.segment_scheduler.queued()]:
            if not job.cancelled.is_set():
                update = protocol.progress_reply(job.request.id, 0.0, "queued")
                self._send(router, [*job.envelope, update])

    def info(self) -> dict:
        limits = self.config.limits
        return {
            "model": self.worker.model_name,
            "device": str(self.worker.device),
            "precision": self.worker.precision,
            "backend": self.worker.backend,
            "path": self.worker.path,
            "refine": self.worker.refine_available,
            "version": __version__,
            "protocol": protocol.VERSION,
            "limits": {"max_pixels": limits.max_pixels,
                       "max_message_bytes": limits.max_message_bytes, "queue": limits.queue,
                       "max_queued_bytes": limits.max_queued_bytes},
            "protocol_minor": protocol.MINOR_VERSION,
            "resize_limit": {"default": protocol.DEFAULT_RESIZE_LIMIT,
                             "min": protocol.MIN_RESIZE_LIMIT, "max": protocol.MAX_RESIZE_LIMIT},
            "queue": {"length": len(self.scheduler), "capacity": limits.queue},
            "formats": sorted(FORMATS),
            "devices": [line for w in self.workers for line in w.devices_info()],
            "segment": self.segment_worker.info() if self.segment_worker else None,
        }  # fmt: skip

    # ----------------------------------------------------------------------------------------

    def _worker_loop(self, worker: InpaintBackend | SegmentWorker, scheduler: Scheduler) -> None:
        push = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(_OUTBOX)

        def emit(job: Job, payload: bytes) -> None:
            push.send_multipart([*job.envelope, payload])

        try:
            while True:
                jobs = scheduler.next_batch(
                    timeout=0.2, key=worker.batch_key, max_batch=worker.max_batch,
                    wait=worker.batch_wait,
                )  # fmt: skip
                if not jobs:
                    if self._stop.is_set():
                        return
                    continue
                try:
                    for job, reply in zip(jobs, worker.run_batch(jobs, emit), strict=True):
                        emit(job, reply)
                finally:
                    scheduler.finished()
        finally:
            time.sleep(0.05)  # let the last messages reach the socket thread
            push.close()
