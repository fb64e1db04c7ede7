"""LamaClient over real sockets: a protocol-v1 ROUTER peer (pyzmq) and raw ZMTP peers.

Every test that makes sense for both transports runs twice: the built-in ZMTP client
(``use_pyzmq=False``, what GIMP/Krita get without pyzmq) and the pyzmq DEALER.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from types import SimpleNamespace

import msgpack
import pytest
import zmq

from lama_client import client, wire
from lama_client.client import (
    Cancelled,
    ImageData,
    LamaClient,
    LamaError,
    RequestTimeout,
    ServerUnavailable,
)

BOTH = pytest.mark.parametrize("use_pyzmq", [False, True], ids=["stdlib", "pyzmq"])
TOKEN = "t0ken-for-tests"
INVERT = bytes(255 - i for i in range(256))  # the fake "model": invert every byte


@dataclass
class Job:
    ident: bytes
    id: str
    request: dict
    step: int = 0
    next_at: float = 0.0


class FakeServer:
    """A ROUTER thread answering protocol v1 (docs/protocol.md) with canned behaviour.

    ``inpaint`` sends ``queued``, one stale reply for another id, ``steps`` progress replies
    ``step_delay`` apart, then the image with every byte inverted. ``silent`` requests are
    swallowed; ``error`` makes every inpaint fail with that (code, message). ``hello`` is
    answered with the right HMAC proof (``proof="right"``), a wrong one (``"wrong"``: an
    impostor without the token), or ``unknown_op`` (``"none"``: a server older than 1.1);
    ``protocol_minor`` (if given) is what its hello says it speaks.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        steps: int = 3,
        step_delay: float = 0.0,
        honour_cancel: bool = True,
        silent: int = 0,
        error: tuple[str, str] | None = None,
        heartbeat_ms: int = 0,
        ipv6: bool = False,
        proof: str = "right",
        protocol_minor: int | None = None,
    ) -> None:
        self.proof = proof
        self.protocol_minor = protocol_minor
        self.hellos = 0
        self.steps, self.step_delay = steps, step_delay
        self.honour_cancel, self.silent, self.error = honour_cancel, silent, error
        self.requests: list[dict] = []
        self.job: Job | None = None
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if ipv6:
            self.sock.setsockopt(zmq.IPV6, 1)
        if heartbeat_ms:
            self.sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
            self.sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * heartbeat_ms)
        self.sock.bind(endpoint or "tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def ops(self) -> list[str]:
        return [r.get("op") for r in self.requests]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.sock.poll(10):
                    ident, payload = self.sock.recv_multipart()
                    self._handle(ident, msgpack.unpackb(payload, raw=False))
                if self.job is not None and time.monotonic() >= self.job.next_at:
                    self._advance(self.job)
        finally:
            self.sock.close(0)
            self.ctx.term()

    def _reply(self, ident: bytes, **fields: object) -> None:
        self.sock.send_multipart([ident, msgpack.packb({"v": 1, **fields}, use_bin_type=True)])

    def _fail(self, ident: bytes, rid: object, code: str, message: str) -> None:
        self._reply(ident, id=rid, ok=False, error={"code": code, "message": message})

    def _handle(self, ident: bytes, req: dict) -> None:
        rid = req.get("id")
        if req.get("op") == "hello" and self.proof != "none":
            self.hellos += 1
            key = TOKEN if self.proof == "right" else "a guess"
            ours, endpoint = os.urandom(32), client.canonical_endpoint(self.endpoint)
            proof = wire.hello_proof(key, req["nonce"], ours, endpoint)
            minor = {} if self.protocol_minor is None else {"protocol_minor": self.protocol_minor}
            return self._reply(ident, id=rid, ok=True, proof=proof, protocol=1,
                               server_nonce=ours, endpoint=endpoint, **minor)  # fmt: skip
        self.requests.append(req)
        if req.get("op") == "hello":
            return self._fail(ident, rid, "unknown_op", "unknown op 'hello'")
        if req.get("token") != TOKEN:
            return self._fail(ident, rid, "unauthorized", "Wrong token.")
        if self.silent > 0:
            self.silent -= 1
            return None
        op = req.get("op")
        if op == "ping":
            return self._reply(ident, id=rid, ok=True, pong=True, version="0.1.0")
        if op == "info":
            return self._reply(ident, id=rid, ok=True, info={"model": "fake", "protocol": 1})
        if op == "cancel":
            job = self.job
            hit = job is not None and job.id == req.get("target") and job.ident == ident
            self._reply(ident, id=rid, ok=True, cancelled=hit)
            if hit and self.honour_cancel:
                self._fail(ident, job.id, "cancelled", "The request was cancelled.")
                self.job = None
            return None
        if op == "inpaint":
            if self.error:
                return self._fail(ident, rid, *self.error)
            self._reply(ident, id=rid, progress=0.0, stage="queued")
            # A leftover from an abandoned request: the client must skip it.
            self._reply(ident, id=uuid.uuid4().hex, ok=True, image={"w": 1, "h": 1})
            self.job = Job(ident, rid, req, next_at=time.monotonic() + self.step_delay)
            return None
        return self._fail(ident, rid, "unknown_op", "Unknown op.")

    def _advance(self, job: Job) -> None:
        job.step += 1
        if job.step <= self.steps:
            self._reply(job.ident, id=job.id, progress=job.step / self.steps, stage="inpaint")
            job.next_at = time.monotonic() + self.step_delay
            return
        image = job.request["image"]
        out = dict(image, data=bytes(image["data"]).translate(INVERT))
        self._reply(job.ident, id=job.id, ok=True, image=out, timing={"total_ms": 1.0})
        self.job = None


def rgba(w: int, h: int) -> ImageData:
    return ImageData(
        w, h, "RGBA8", bytes(range(256)) * (w * h * 4 // 256) + b"\x07" * (w * h * 4 % 256)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Requests and replies


@BOTH
def test_ping_info_and_envelope(use_pyzmq):
    with FakeServer() as server, LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c:
        assert c.uses_pyzmq is use_pyzmq
        reply = c.ping()
        assert reply["pong"] is True and reply["version"] == "0.1.0"
        assert c.info()["model"] == "fake"
    first, second = server.requests
    for req in server.requests:
        assert req["v"] == 1 and req["token"] == TOKEN
        assert uuid.UUID(hex=req["id"]).version == 4 and len(req["id"]) == 32
    assert first["id"] != second["id"] and server.ops() == ["ping", "info"]


@BOTH
def test_inpaint_reports_progress_skips_stale_replies_and_returns_the_image(use_pyzmq):
    image = rgba(40, 30)
    mask = bytes([0, 255]) * (40 * 30 // 2)
    seen: list[tuple[float, str]] = []
    with (
        FakeServer(steps=3) as server,
        LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c,
    ):
        out = c.inpaint(image, mask, {"mask_grow": 2, "output": "layer"},
                        progress=lambda p, s: seen.append((p, s)))  # fmt: skip
    assert out == ImageData(40, 30, "RGBA8", image.data.translate(INVERT))
    assert seen == [(0.0, "queued"), (1 / 3, "inpaint"), (2 / 3, "inpaint"), (1.0, "inpaint")]
    req = server.requests[0]
    assert req["op"] == "inpaint" and req["options"] == {"mask_grow": 2, "output": "layer"}
    assert req["image"] == {"w": 40, "h": 30, "format": "RGBA8", "data": image.data}
    assert req["mask"] == {"w": 40, "h": 30, "data": mask}


@pytest.mark.parametrize("minor", [None, client.RESIZE_LIMIT_MINOR])
def test_resize_limit_is_sent_only_when_given(minor):
    image, mask = rgba(8, 8), b"\xff" * 64
    with FakeServer(protocol_minor=minor) as server, LamaClient(server.endpoint, TOKEN) as c:
        c.inpaint(image, mask, {"mask_grow": 2})
        c.inpaint(image, mask, {"mask_grow": 2}, resize_limit=768)
    plain, limited = (r["options"] for r in server.requests if r["op"] == "inpaint")
    assert plain == {"mask_grow": 2} and limited == {"mask_grow": 2, "resize_limit": 768}


@BOTH
def test_resize_limit_on_an_older_server_says_to_update_it_and_sends_nothing(use_pyzmq):
    old = client.RESIZE_LIMIT_MINOR - 1
    with (
        FakeServer(protocol_minor=old) as server,
        LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c,
    ):
        with pytest.raises(LamaError) as caught:
            c.inpaint(rgba(8, 8), b"\xff" * 64, resize_limit=512)
        c.inpaint(rgba(8, 8), b"\xff" * 64)  # without it, that server still works
    assert caught.value.code == "old_server"
    assert f"protocol 1.{old}" in caught.value.message and "update lama-server" in caught.value.message
    assert [r.get("options") for r in server.requests if r["op"] == "inpaint"] == [{}]


@BOTH
def test_multi_megabyte_images_cross_intact(use_pyzmq):
    image = rgba(1024, 768)  # 3 MiB each way
    with (
        FakeServer(steps=1) as server,
        LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c,
    ):
        out = c.inpaint(image, b"\xff" * (1024 * 768))
        again = c.inpaint(ImageData(1, 1, "GRAY8", b"\x10"), b"\xff")  # short frames after long
    assert out.data == image.data.translate(INVERT)
    assert again.data == b"\xef"


@BOTH
def test_error_replies_raise_lama_error_with_code_and_message(use_pyzmq):
    with FakeServer(error=("busy", "The queue is full.")) as server:
        with LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c:
            with pytest.raises(LamaError) as info:
                c.inpaint(rgba(2, 2), b"\xff" * 4)
            assert (info.value.code, info.value.message) == ("busy", "The queue is full.")
            assert not isinstance(info.value, (Cancelled, ServerUnavailable, RequestTimeout))
            assert c.ping()["pong"]  # the connection is still good after an error reply
        with LamaClient(server.endpoint, "wrong", use_pyzmq=use_pyzmq) as c:
            with pytest.raises(LamaError, match="did not prove that it knows your token") as info:
                c.ping()  # the server's proof does not match a wrong token: nothing is sent
            assert info.value.code == "unauthorized"
        with LamaClient(server.endpoint, "wrong", use_pyzmq=use_pyzmq, verify_server=False) as c:
            with pytest.raises(LamaError, match="Wrong token") as info:
                c.ping()
            assert info.value.code == "unauthorized"


# --------------------------------------------------------------------------------------------
# Cancel


@BOTH
def test_cancel_sends_cancel_op_and_raises_cancelled(use_pyzmq):
    cancel = threading.Event()

    def progress(p: float, stage: str) -> None:
        if stage == "inpaint":
            cancel.set()

    with FakeServer(steps=50, step_delay=0.1) as server:
        with LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c:
            start = time.monotonic()
            with pytest.raises(Cancelled) as info:
                c.inpaint(rgba(4, 4), b"\xff" * 16, progress=progress, cancel=cancel)
            assert time.monotonic() - start < 1.5  # not the 5 s of 50 steps
            assert info.value.code == "cancelled"
            assert c.ping()["pong"]
    inpaint_req, cancel_req, _ = server.requests
    assert cancel_req["op"] == "cancel" and cancel_req["target"] == inpaint_req["id"]
    assert cancel_req["token"] == TOKEN and cancel_req["id"] != inpaint_req["id"]


@BOTH
def test_cancel_gives_up_after_the_grace_period_if_the_server_ignores_it(use_pyzmq):
    cancel = threading.Event()
    with FakeServer(steps=6, step_delay=0.2, honour_cancel=False) as server:
        with LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c:
            c.cancel_grace = 0.3
            threading.Timer(0.1, cancel.set).start()
            start = time.monotonic()
            with pytest.raises(Cancelled):
                c.inpaint(rgba(4, 4), b"\xff" * 16, cancel=cancel)
            assert 0.3 <= time.monotonic() - start < 1.0
            # The abandoned request's replies must not leak into the next call.
            assert c.ping()["pong"]
    assert server.ops() == ["inpaint", "cancel", "ping"]


def test_cancel_set_before_the_call_sends_nothing():
    cancel = threading.Event()
    cancel.set()
    with FakeServer() as server, LamaClient(server.endpoint, TOKEN, use_pyzmq=False) as c:
        with pytest.raises(Cancelled):
            c.inpaint(rgba(2, 2), b"\xff" * 4, cancel=cancel)
        c.ping()
    assert server.ops() == ["ping"]


# --------------------------------------------------------------------------------------------
# Timeouts, unreachable servers, restarts


@BOTH
def test_reply_timeout_raises_request_timeout_and_the_client_recovers(use_pyzmq):
    with FakeServer(silent=1) as server:
        with LamaClient(server.endpoint, TOKEN, timeout=0.5, use_pyzmq=use_pyzmq) as c:
            start = time.monotonic()
            with pytest.raises(RequestTimeout) as info:
                c.ping()
            assert 0.45 <= time.monotonic() - start < 1.5
            assert info.value.code == "timeout"
            assert c.ping()["pong"]


@BOTH
def test_progress_keeps_a_request_alive_past_the_timeout(use_pyzmq, monkeypatch):
    """The timeout bounds silence, not the whole job: a refinement on a CPU runs for many
    minutes and reports progress all along.

    The client's clock jumps by three quarters of the timeout at each progress message, so
    the job lasts several timeouts on the client's clock whatever the machine's load, while
    the real gaps between messages keep a wide margin below the timeout.
    """
    timeout = 10.0
    skipped = [0.0]  # seconds the client's clock is ahead of the real one

    def clock() -> float:
        return real_monotonic() + skipped[0]

    def on_progress(_fraction: float, _stage: str) -> None:
        skipped[0] += 0.75 * timeout

    real_monotonic = time.monotonic
    monkeypatch.setattr(client, "time", SimpleNamespace(monotonic=clock, sleep=time.sleep))
    with FakeServer(steps=4, step_delay=0.05) as server:
        with LamaClient(server.endpoint, TOKEN, timeout=timeout, use_pyzmq=use_pyzmq) as c:
            start = clock()
            out = c.inpaint(rgba(2, 2), b"\xff" * 4, progress=on_progress)
            assert clock() - start > 2 * timeout  # in steps shorter than the timeout
    assert out.data == rgba(2, 2).data.translate(INVERT)


@BOTH
def test_a_request_whose_progress_stops_times_out(use_pyzmq):
    with FakeServer(steps=1, step_delay=5.0) as server:  # queued at once, then five silent s
        with LamaClient(server.endpoint, TOKEN, timeout=0.5, use_pyzmq=use_pyzmq) as c:
            start = time.monotonic()
            with pytest.raises(RequestTimeout, match="no word from the server in 0.5 s"):
                c.inpaint(rgba(2, 2), b"\xff" * 4)
            assert 0.45 <= time.monotonic() - start < 2.0


@BOTH
def test_server_down_is_server_unavailable_within_two_seconds(use_pyzmq):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="lama-server") as info:
        LamaClient(endpoint, TOKEN, use_pyzmq=use_pyzmq).ping()
    assert time.monotonic() - start < 2.5
    assert info.value.code == "unavailable"


@BOTH
def test_a_listener_that_never_speaks_zmtp_is_unavailable_not_a_hang(use_pyzmq):
    with socket.socket() as mute:  # accepts connections (backlog), never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        endpoint = f"tcp://127.0.0.1:{mute.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ServerUnavailable):
            LamaClient(endpoint, TOKEN, connect_timeout=0.5, use_pyzmq=use_pyzmq).ping()
        assert time.monotonic() - start < 1.5


@BOTH
def test_server_restart_reconnects_transparently(use_pyzmq):
    first = FakeServer()
    c = LamaClient(first.endpoint, TOKEN, use_pyzmq=use_pyzmq)
    try:
        assert c.ping()["pong"]
        first.close()
        time.sleep(0.1)  # let the close reach the client's socket
        with FakeServer(first.endpoint) as second:
            assert c.ping()["pong"]  # same client, new server
            assert c.ping()["pong"]
        assert second.ops() == ["ping", "ping"]
    finally:
        c.close()


def test_server_dying_mid_request_is_reported_at_once_and_the_next_call_reconnects():
    first = FakeServer(steps=1, step_delay=30)
    c = LamaClient(first.endpoint, TOKEN, use_pyzmq=False)
    try:
        threading.Timer(0.3, first.close).start()
        start = time.monotonic()
        with pytest.raises(ServerUnavailable, match="closed the connection"):
            c.inpaint(rgba(2, 2), b"\xff" * 4)
        assert time.monotonic() - start < 2.0
        with FakeServer(first.endpoint) as second:
            assert c.ping()["pong"]
        assert second.ops() == ["ping"]
    finally:
        c.close()


# --------------------------------------------------------------------------------------------
# Endpoints


@BOTH
def test_ipc_endpoint(use_pyzmq, tmp_path):
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix sockets here")
    with FakeServer(f"ipc://{tmp_path}/lama.sock") as server:
        with LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c:
            assert c.ping()["pong"]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
@BOTH
def test_ipv6_bracketed_endpoint(use_pyzmq):
    with FakeServer("tcp://[::1]:*", ipv6=True) as server:
        assert server.endpoint.startswith("tcp://[::1]:")
        with LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c:
            assert c.ping()["pong"]


@BOTH
def test_unsupported_endpoint_is_a_clear_error(use_pyzmq):
    with pytest.raises(LamaError, match="endpoint") as info:
        LamaClient("udp://127.0.0.1:1", TOKEN, use_pyzmq=use_pyzmq).ping()
    assert info.value.code == "bad_endpoint"


# --------------------------------------------------------------------------------------------
# ZMTP details


def test_heartbeats_from_libzmq_are_answered_while_waiting():
    # libzmq drops a connection that does not PONG within 3 heartbeat intervals; the reply
    # comes after 10 of them, so it only arrives if the client answers PINGs while it waits.
    with FakeServer(steps=1, step_delay=0.5, heartbeat_ms=50) as server:
        with LamaClient(server.endpoint, TOKEN, use_pyzmq=False) as c:
            out = c.inpaint(ImageData(1, 1, "GRAY8", b"\x00"), b"\xff")
    assert out.data == b"\xff"


def test_stdlib_client_turns_nagle_off():
    """With Nagle on, a message's last small segment waited for the server's delayed ACK:
    every hello and ping took 40 ms (Linux), the stdlib round trip twice pyzmq's."""
    with FakeServer() as server:
        conn = client.ZmtpConnection(server.endpoint, 2.0)
        try:
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            conn.close()


def test_a_short_timeout_holds_even_while_heartbeats_arrive():
    with FakeServer(silent=1, heartbeat_ms=50) as server:
        with LamaClient(server.endpoint, TOKEN, timeout=0.4, use_pyzmq=False) as c:
            start = time.monotonic()
            with pytest.raises(RequestTimeout):
                c.ping()
            assert time.monotonic() - start < 1.0


class RawPeer:
    """A hand-written ZMTP server on a plain socket, for what libzmq will not do on demand."""

    def __init__(self, script) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.script = script
        self.result: dict = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        try:
            self.script(conn, self.result)
        except Exception as exc:  # reported by the test through result
            self.result["error"] = exc
        finally:
            conn.close()

    def join(self) -> dict:
        self.thread.join(5)
        self.listener.close()
        return self.result


def recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        assert chunk, "peer closed"
        buf += chunk
    return buf


def read_frame(conn: socket.socket) -> tuple[int, bytes]:
    flags = recv_exact(conn, 1)[0]
    size = struct.unpack(">Q", recv_exact(conn, 8))[0] if flags & 2 else recv_exact(conn, 1)[0]
    return flags, recv_exact(conn, size)


def server_greeting(mechanism: bytes = b"NULL", minor: int = 1) -> bytes:
    return (b"\xff" + b"\x00" * 8 + b"\x7f" + bytes((3, minor)) + mechanism.ljust(20, b"\x00")
            + b"\x01" + b"\x00" * 31)  # fmt: skip


def greet_like_libzmq(conn: socket.socket, mechanism: bytes = b"NULL") -> bytes:
    """libzmq's order: read the peer's signature and major version, answer with the whole
    greeting, then read the rest of the peer's. Returns the peer's 64 greeting bytes."""
    head = recv_exact(conn, 11)
    conn.sendall(server_greeting(mechanism))
    return head + recv_exact(conn, 53)


def test_handshake_ping_pong_and_multipart_against_a_raw_zmtp_peer():
    def script(conn: socket.socket, result: dict) -> None:
        result["greeting"] = greet_like_libzmq(conn)
        flags, ready = read_frame(conn)
        result["ready"] = (flags, ready)
        conn.sendall(wire.zmtp_ready("ROUTER"))
        result["request"] = read_frame(conn)
        # ZMTP 3.1 heartbeat: PING with TTL 0x0102 and a context to echo back.
        conn.sendall(wire.zmtp_frame(b"\x04PING\x01\x02ctx", command=True))
        conn.sendall(wire.zmtp_frame(b"head-", more=True) + wire.zmtp_frame(b"t" * 300))
        result["pong"] = read_frame(conn)

    peer = RawPeer(script)
    conn = client.ZmtpConnection(peer.endpoint, 2.0)
    conn.send(b"request")
    assert conn.recv(5.0) == b"head-" + b"t" * 300
    time.sleep(0.05)
    conn.close()
    result = peer.join()
    assert "error" not in result, result.get("error")
    greeting = result["greeting"]
    assert greeting[:10] == b"\xff" + b"\x00" * 8 + b"\x7f" and greeting[10] == 3
    assert greeting[12:32] == b"NULL".ljust(20, b"\x00") and greeting[32] == 0  # as-server 0
    flags, ready = result["ready"]
    assert flags == 0x04 and ready.startswith(b"\x05READY")
    props = wire.parse_properties(ready[6:])
    assert props == {"Socket-Type": b"DEALER", "Identity": b""}
    assert result["request"] == (0, b"request")
    assert result["pong"] == (0x04, b"\x04PONGctx")


def test_handshake_error_command_is_reported():
    def script(conn: socket.socket, result: dict) -> None:
        greet_like_libzmq(conn)
        read_frame(conn)
        reason = b"Invalid socket type"
        conn.sendall(wire.zmtp_frame(b"\x05ERROR" + bytes((len(reason),)) + reason, command=True))

    peer = RawPeer(script)
    with pytest.raises(ServerUnavailable, match="Invalid socket type"):
        client.ZmtpConnection(peer.endpoint, 2.0)
    peer.join()


def test_curve_server_is_refused_with_a_hint():
    def script(conn: socket.socket, result: dict) -> None:
        recv_exact(conn, 11)  # then a CURVE server answers and hangs up on the NULL client
        conn.sendall(server_greeting(b"CURVE"))
        time.sleep(0.2)

    peer = RawPeer(script)
    with pytest.raises(ServerUnavailable, match="CURVE"):
        LamaClient(peer.endpoint, TOKEN, use_pyzmq=False).ping()
    peer.join()


def test_a_non_zeromq_peer_is_refused():
    def script(conn: socket.socket, result: dict) -> None:
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b" " * 64)
        time.sleep(0.2)

    peer = RawPeer(script)
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="not a ZeroMQ"):
        LamaClient(peer.endpoint, TOKEN, use_pyzmq=False).ping()
    assert time.monotonic() - start < 1.0
    peer.join()


@BOTH
@pytest.mark.parametrize("proof", ["wrong", "none"])
def test_no_token_or_pixels_go_to_a_server_that_cannot_prove_the_token(use_pyzmq, proof):
    """An impostor (wrong HMAC) or a server without ``hello`` gets nothing but the hello."""
    with FakeServer(proof=proof) as server:
        with LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c:
            with pytest.raises(LamaError) as info:
                c.inpaint(rgba(4, 4), b"\xff" * 16)
        time.sleep(0.1)
        assert all(r.get("op") == "hello" for r in server.requests)
        assert not any("token" in r or "image" in r for r in server.requests)
    assert info.value.code == ("unauthorized" if proof == "wrong" else "unverified")
    assert "Nothing was sent" in info.value.message


@BOTH
def test_client_proves_the_server_before_every_request(use_pyzmq):
    with FakeServer() as server, LamaClient(server.endpoint, TOKEN, use_pyzmq=use_pyzmq) as c:
        c.ping()
        c.inpaint(rgba(2, 2), b"\xff" * 4)
    assert server.hellos == 2 and server.ops() == ["ping", "inpaint"]


def test_stdlib_client_refuses_a_frame_header_beyond_the_protocol_limit():
    """A peer announcing a 1 GiB frame gets an error at once, before anything is allocated."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                recv_exact(conn, 11)
                conn.sendall(wire.zmtp_greeting(as_server=True))
                recv_exact(conn, 64 - 11)
                conn.sendall(wire.zmtp_ready("ROUTER"))
                time.sleep(0.2)
                conn.sendall(wire.zmtp_frame_header(1 << 30))
                time.sleep(2)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        conn = client.ZmtpConnection(f"tcp://127.0.0.1:{listener.getsockname()[1]}", 2.0)
        try:
            with pytest.raises(LamaError) as info:
                conn.recv(5.0)
        finally:
            conn.close()
        thread.join(5)
    assert info.value.code == "too_large"
