"""A hostile program on the same machine (issue 21): it cannot slow, lock out or feed on the
server, and clients trust nothing before the server is proven.

Real ``lama-server`` processes with the tiny model, attacked over raw sockets on loopback TCP
and on ``ipc://``; the gate's own promises are also checked on a :class:`TokenGate` in front
of a real ROUTER. CI-sized: short attacks, generous latency bounds (a busy 2-core machine);
``bench/unauth_memory.py`` measures the strict figures.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import msgpack
import pytest
import zmq

from lama_client import client, wire
from lama_client.client import LamaClient, LamaError, ZmtpConnection
from lama_server.daemon import auth, token_gate
from lama_server.daemon.token_gate import TokenGate
from lama_server.wire import protocol
from lama_server.wire.protocol import Limits

KINDS = ["tcp", "ipc"]


@pytest.fixture(params=KINDS)
def hostile_target(request, server_factory, tmp_path):
    """A real lama-server on loopback TCP or on an ipc:// socket in a folder it creates."""
    if request.param == "tcp":
        return server_factory("--no-warmup")
    return server_factory("--no-warmup", "--listen", f"ipc://{tmp_path}/run/lama.sock")


def _wrong_token_message(size: int = 65536, token: str = "not-the-token") -> bytes:
    head = {"v": 1, "id": "intruder", "op": "ping", "token": token}
    pad = size - len(msgpack.packb({**head, "pad": b""}, use_bin_type=True)) - 4
    return msgpack.packb({**head, "pad": bytes(max(pad, 0))}, use_bin_type=True)


def _flood(endpoint: str, until: float, sent: list[int]) -> None:
    """Send 64 KiB wrong-token messages as fast as the gate takes them, reconnecting when it
    hangs up."""
    message = _wrong_token_message()
    while time.monotonic() < until:
        try:
            conn = ZmtpConnection(endpoint, 2.0)
        except LamaError:
            time.sleep(0.01)
            continue
        try:
            while time.monotonic() < until:
                conn.send(message)
                sent[0] += 1
        except OSError:
            pass
        finally:
            conn.close()


def _pings_during(endpoint: str, token: str, attack, seconds: float) -> list[float]:
    """Ping latencies (s) of an authenticated client while ``attack(until)`` runs."""
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=attack, args=(until,), daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    latencies = []
    with LamaClient(endpoint, token, use_pyzmq=False) as c:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            assert c.ping()["pong"] is True
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.02)
    for t in threads:
        t.join(10)
    return latencies


def test_flooding_wrong_token_messages_does_not_slow_authenticated_clients(hostile_target):
    sent = [0]
    latencies = _pings_during(
        hostile_target.endpoint, hostile_target.token,
        lambda until: _flood(hostile_target.endpoint, until, sent), 3.0,
    )  # fmt: skip
    assert sent[0] > 40, "the attack did not run"
    assert len(latencies) > 10 and max(latencies) < 1.0, sorted(latencies)[-5:]
    assert hostile_target.proc.poll() is None


def _idle_socket(endpoint: str) -> socket.socket:
    if endpoint.startswith("ipc://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(endpoint[len("ipc://") :])
        return sock
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    return socket.create_connection((host, int(port)))


def test_six_hundred_idle_connections_do_not_lock_out_an_authenticated_client(hostile_target):
    idle = [_idle_socket(hostile_target.endpoint) for _ in range(600)]
    try:
        t0 = time.monotonic()
        for use_pyzmq in (False, True):
            with LamaClient(hostile_target.endpoint, hostile_target.token,
                            use_pyzmq=use_pyzmq, connect_timeout=5.0) as c:  # fmt: skip
                assert c.ping()["pong"] is True
        assert time.monotonic() - t0 < 10
    finally:
        for sock in idle:
            sock.close()


NON_TOKEN_FAILURES = [
    msgpack.packb({"v": 2, "id": "a", "op": "ping"}),  # wrong version, no token
    b"\xc1 not msgpack at all",
    msgpack.packb([1, 2, 3]),
    msgpack.packb({"v": 1, "id": "b", "op": "explode", "token": "wrong"}),
    msgpack.packb({"v": 1, "id": "c", "op": "ping", "pad": [[0] * 100] * 100}),  # no token
]


def _final(conn: ZmtpConnection, timeout: float = 5.0) -> dict:
    raw = conn.recv(timeout)
    assert raw is not None, "no answer"
    return msgpack.unpackb(raw, raw=False)


def test_messages_without_the_token_are_answered_but_never_reach_the_server(hostile_target):
    conn = ZmtpConnection(hostile_target.endpoint, 2.0)
    try:
        codes = []
        for message in NON_TOKEN_FAILURES:
            conn.send(message)
            codes.append(_final(conn)["error"]["code"])
    finally:
        conn.close()
    assert codes == ["unsupported_version", "bad_request", "bad_request", "unknown_op",
                     "unauthorized"]  # fmt: skip
    with LamaClient(hostile_target.endpoint, hostile_target.token) as c:
        assert c.ping()["pong"] is True
    assert "refused request" not in hostile_target.log()  # the server's own refusals


# --------------------------------------------------------------------------------------------
# The gate itself, in front of a real ROUTER


class GateRig:
    """A :class:`TokenGate` on loopback TCP in front of a real ROUTER that counts arrivals."""

    def __init__(self, tmp_path: Path) -> None:
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.bind(f"ipc://{tmp_path}/router.sock")
        self.hellos = 0

        def answer_hello(frame: memoryview) -> bytes:
            self.hellos += 1
            return protocol.encode({"id": "h", "ok": True})

        self.gate = TokenGate("tcp://127.0.0.1:*", self.router.getsockopt_string(zmq.LAST_ENDPOINT),
                              lambda token: token == "right", Limits(), answer_hello)  # fmt: skip
        self.gate.start()
        self.endpoint = self.gate.bound_endpoint

    def arrived(self, wait: float = 0.3) -> int:
        count = 0
        while self.router.poll(int(wait * 1000)):
            self.router.recv_multipart()
            count += 1
        return count

    def close(self) -> None:
        self.gate.stop(0.5)
        self.router.close(0)
        self.ctx.term()


@pytest.fixture
def rig(tmp_path):
    rig = GateRig(tmp_path)
    yield rig
    rig.close()


def test_gate_answers_hello_and_refusals_itself_and_trusts_only_the_token(rig, monkeypatch):
    monkeypatch.setattr(token_gate, "OWN_AUTH_DEADLINE_S", 0.5)
    monkeypatch.setattr(token_gate, "AUTH_DEADLINE_S", 0.5)
    conn = ZmtpConnection(rig.endpoint, 2.0)
    hello = msgpack.packb({"v": 1, "id": "h", "op": "hello", "nonce": bytes(32)})
    for message in [hello, *NON_TOKEN_FAILURES[:3]]:
        conn.send(message)
        assert "ok" in _final(conn)
    assert rig.hellos == 1 and rig.arrived() == 0
    assert not any(c.trusted for c in rig.gate._conns.values())
    time.sleep(2.0)  # past the deadline to show the token: closed, though it was never idle
    assert not rig.gate._conns
    conn.close()
    good = ZmtpConnection(rig.endpoint, 2.0)
    good.send(msgpack.packb({"v": 1, "id": "p", "op": "ping", "token": "right"}))
    assert rig.arrived(2.0) == 1
    assert [c.trusted for c in rig.gate._conns.values()] == [True]
    good.close()


def _read_frames(sock: socket.socket, want: int, raw: bytearray) -> list[bytes]:
    """The ZMTP frames in ``raw`` and what follows it on ``sock``, read until ``raw`` holds
    ``want`` bytes (or 10 s passed)."""
    until = time.monotonic() + 10
    sock.settimeout(0.5)
    while len(raw) < want and time.monotonic() < until:
        try:
            raw += sock.recv(1 << 20)
        except TimeoutError:
            continue
    frames, at = [], 0
    while at < len(raw):
        long_form = raw[at] & wire.FLAG_LONG
        size = struct.unpack(">Q", raw[at + 1 : at + 9])[0] if long_form else raw[at + 1]
        at += 9 if long_form else 2
        frames.append(bytes(raw[at : at + size]))
        at += size
    return frames


def test_a_refusal_on_a_trusted_connection_waits_for_the_end_of_the_servers_reply(rig):
    """The gate's own answer must not land inside a reply it is still passing on."""
    conn = ZmtpConnection(rig.endpoint, 2.0)
    conn.send(msgpack.packb({"v": 1, "id": "p", "op": "ping", "token": "right"}))
    assert rig.router.poll(2000)
    peer, _ = rig.router.recv_multipart()
    reply = b"x" * (3 * token_gate.MAX_PENDING)  # more than the gate holds: it stops midway
    rig.router.send_multipart([peer, reply])
    time.sleep(0.5)
    raw = bytearray(conn.sock.recv(1 << 20))  # part of the reply: the gate reads us again
    conn.sock.sendall(wire.zmtp_frame(b"a", more=True) + wire.zmtp_frame(b"b"))  # refused
    time.sleep(0.3)
    frames = _read_frames(conn.sock, 9 + len(reply) + 40, raw)
    assert len(frames) == 2 and frames[0] == reply, [len(f) for f in frames]
    assert msgpack.unpackb(frames[1])["error"]["code"] == "bad_request"
    conn.close()


def test_a_peer_that_sends_wrong_tokens_and_never_reads_is_closed_with_a_bounded_queue(rig):
    host, port = rig.endpoint[len("tcp://") :].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ping = wire.zmtp_frame(_wrong_token_message(40))
    sock.sendall(wire.zmtp_greeting() + wire.zmtp_ready("DEALER") + ping * 20000)
    queued = []
    for _ in range(20):
        time.sleep(0.05)
        queued.append(sum(len(c.to_client) for c in list(rig.gate._conns.values())))
    assert max(queued) <= token_gate.UNTRUSTED_QUEUE_BYTES + 512
    assert rig.arrived() == 0
    sock.settimeout(5)
    received = b""
    try:
        while chunk := sock.recv(65536):  # the gate hangs up after its last answer
            received += chunk
    except ConnectionResetError:  # it closed with our unread pings in its buffer
        pass
    assert received.count(b"unauthorized") <= token_gate.UNTRUSTED_ANSWERS
    assert not rig.gate._conns
    sock.close()


def test_a_peer_whose_messages_are_refused_is_read_more_slowly_with_each_refusal(rig):
    """The gate stops reading a refused sender for a while (doubling), so a flood of wrong
    tokens waits on full socket buffers instead of taking the CPU authenticated clients need."""
    conn = ZmtpConnection(rig.endpoint, 5.0)
    answered = []
    for _ in range(6):  # sent back to back; each answer waits for the pause before it
        conn.send(_wrong_token_message(200))
    for _ in range(6):
        assert _final(conn)["error"]["code"] == "unauthorized"
        answered.append(time.monotonic())
    gaps = [b - a for a, b in zip(answered, answered[1:], strict=False)]
    pauses = [token_gate.REFUSAL_PAUSE_S * 2**i for i in range(5)]  # after refusals 1 to 5
    assert all(gap >= pause * 0.9 for gap, pause in zip(gaps, pauses, strict=True)), (gaps, pauses)
    assert rig.arrived() == 0
    conn.close()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peer uid: Linux")
def test_another_users_connections_are_capped_and_never_crowd_out_the_servers_user(rig):
    host, port = rig.endpoint[len("tcp://") :].rsplit(":", 1)
    host.encode("idna")  # loaded now: the child, as nobody, cannot read this Python's files
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other user: 100 connections, then how many the gate kept
        try:
            os.setgid(65534)
            os.setuid(65534)
            socks = [socket.create_connection((host, int(port))) for _ in range(100)]
            time.sleep(0.5)
            alive = 0
            for sock in socks:
                sock.settimeout(0.5)
                try:
                    alive += len(sock.recv(64)) > 0
                except OSError:
                    pass
            os.write(write_end, str(alive).encode())
        except BaseException as exc:
            os.write(write_end, repr(exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    answer = os.read(read_end, 256).decode()
    os.close(read_end)
    assert answer.isdigit(), answer
    alive = int(answer)
    assert 0 < alive <= token_gate.OTHER_USER_CONNECTIONS
    ours = ZmtpConnection(rig.endpoint, 2.0)  # the server's user still gets in at once
    ours.send(msgpack.packb({"v": 1, "id": "p", "op": "ping", "token": "right"}))
    assert rig.arrived(2.0) == 1
    ours.close()


def test_peer_uid_names_the_connecting_user(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("peer uid: Linux")
    for family, address in ((socket.AF_INET, ("127.0.0.1", 0)), (socket.AF_UNIX, str(tmp_path / "s"))):
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(1)
        peer = socket.socket(family, socket.SOCK_STREAM)
        peer.connect(listener.getsockname())
        accepted, _ = listener.accept()
        assert auth.peer_uid(accepted) == os.geteuid()
        for sock in (accepted, peer, listener):
            sock.close()


# --------------------------------------------------------------------------------------------
# The client trusts nothing before the proof


class HugeFrameServer:
    """A ZMTP listener that answers anything with a frame header announcing 680 MB."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.sendall(wire.zmtp_greeting(as_server=True) + wire.zmtp_ready("ROUTER"))
        conn.settimeout(5)
        conn.recv(65536)  # the client's greeting, READY and hello
        conn.sendall(b"\x02" + struct.pack(">Q", wire.MAX_REPLY_BYTES) + b"\0" * 4096)
        time.sleep(2)
        conn.close()


def test_client_reads_no_large_frame_before_the_server_is_proven():
    server = HugeFrameServer()
    tracemalloc.start()
    try:
        with pytest.raises(LamaError) as info:
            LamaClient(server.endpoint, "token", use_pyzmq=False).ping()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"the client allocated {peak} bytes"
    assert info.value.code == "unverified" and len(str(info.value).splitlines()) == 1


class Relay:
    """A loopback TCP forwarder to ``target``: a program in the middle, on another port."""

    def __init__(self, target: str) -> None:
        host, port = target[len("tcp://") :].rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            far = socket.create_connection(self.target)
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                sock.close()


@pytest.mark.parametrize("use_pyzmq", [False, True], ids=["stdlib", "pyzmq"])
def test_a_relayed_hello_proof_is_refused(running_server, use_pyzmq):
    relay = Relay(running_server.endpoint)
    with pytest.raises(LamaError, match="a relay") as info:
        LamaClient(relay.endpoint, running_server.token, use_pyzmq=use_pyzmq).ping()
    assert info.value.code == "unauthorized"
    relay.listener.close()
    with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=use_pyzmq) as c:
        assert c.ping()["pong"] is True


def test_hello_2_binds_the_proof_to_both_nonces_and_the_endpoint(running_server):
    conn = ZmtpConnection(running_server.endpoint, 2.0)
    nonce = os.urandom(32)
    conn.send(msgpack.packb({"v": 1, "id": "h", "op": "hello", "nonce": nonce, "hello": 2}))
    reply = _final(conn)
    conn.close()
    endpoint = client.canonical_endpoint(running_server.endpoint)
    assert reply["endpoint"] == endpoint and len(reply["server_nonce"]) == 32
    expected = wire.hello_proof(running_server.token, nonce, reply["server_nonce"], endpoint)
    assert reply["proof"] == expected and reply["protocol_minor"] == 6


# --------------------------------------------------------------------------------------------
# ipc:// only in a private folder


@pytest.mark.parametrize("where", ["shared-folder", "abstract"])
def test_ipc_endpoint_outside_a_private_folder_is_refused(tmp_path, tiny_model_dir, where):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    endpoint = f"ipc://{shared}/lama.sock" if where == "shared-folder" else "ipc://@lama-test"
    cmd = [sys.executable, "-m", "lama_server.commands.serve", "--model", str(tiny_model_dir),
           "--device", "cpu", "--no-warmup", "--listen", endpoint,
           "--token-file", str(tmp_path / "t")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert ("not private" if where == "shared-folder" else "every user") in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (shared / "lama.sock").exists()
