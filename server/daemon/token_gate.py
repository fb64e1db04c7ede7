"""The token gate: messages from a peer without the token never reach libzmq.

libzmq receives every message whole (it allocates what a frame header announces and fills it)
before the application can look at it, so the ROUTER cannot refuse an unauthenticated 600 MB
message before holding 600 MB. The gate sits in front of it on loopback endpoints: it accepts
the clients' connections itself, speaks ZMTP 3 (NULL mechanism, as a ROUTER peer) to them, reads
only the first 64 KiB of each message, and checks the token there with a bounded scan
(:func:`protocol.screen`), never a decode. It answers ``hello`` itself (no token needed) and
refuses everything else without a valid token; only a message with a valid token opens the
client's upstream connection to the real ROUTER (bound on a private ``ipc://`` socket in a
0700 folder) and makes the connection *trusted*. A refused message's rest is read and thrown
away in 1 MiB pieces at a bounded rate. Reading from a client pauses while its upstream is busy
(TCP back-pressure), so each connection holds a few MB at most; one without the token holds its
64 KiB prefix and a few hundred bytes of answers.

Who may hold a slot (:data:`MAX_CONNECTIONS`): trusted connections are never pushed out. A
connection must show the token within :data:`AUTH_DEADLINE_S` (:data:`OWN_AUTH_DEADLINE_S` for
the server's own user), gets at most :data:`UNTRUSTED_ANSWERS` answers before that, and is
closed after them. On Linux the peer's user is known (:func:`auth.peer_uid`): another user holds
at most :data:`OTHER_USER_CONNECTIONS` waiting connections and never pushes out one of the
server's user; when the gate is full, the oldest waiting connection gives way to a new one.

Replies flow back unchanged. When a client disconnects its upstream connection is closed too,
so the ROUTER sees the client leave. CURVE (remote) endpoints are served by libzmq directly.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lama_client.client import ZmtpConnection
from lama_client.errors import LamaError
from lama_client.wire import (
    FLAG_COMMAND,
    FLAG_LONG,
    FLAG_MORE,
    MAX_COMMAND_BYTES,
    command_name,
    zmtp_frame,
    zmtp_greeting,
    zmtp_ready,
)
from lama_server.daemon.auth import peer_uid
from lama_server.wire import protocol
from lama_server.wire.protocol import Limits, ProtocolError

log = logging.getLogger("lama_server")

CHUNK = 1 << 20  # bytes moved per read while streaming an accepted message
MAX_PENDING = 4 << 20  # stop reading a side while this much waits to be written to the other
MAX_CONNECTIONS = 512
#: Seconds from connecting to the first message with a valid token: other users and peers the
#: system does not identify; the server's own user (a client connects, sends hello, then its
#: request at once: these are generous).
AUTH_DEADLINE_S = 3.0
OWN_AUTH_DEADLINE_S = 30.0
OTHER_USER_CONNECTIONS = 16  # waiting (not yet trusted) connections per other user
#: Answers (hello, refusals) a connection gets before it shows the token; it is closed after
#: the last. A client needs one (its hello); the rest is slack for clients that probe.
UNTRUSTED_ANSWERS = 8
#: A connection without the token is not read while this much waits to be written to it: a
#: peer that sends and never reads gets no growing queue.
UNTRUSTED_QUEUE_BYTES = 4096
#: A connection without the token is not read for this long after a refusal, doubling with
#: each further one (at most about 2.5 s over its UNTRUSTED_ANSWERS): a program that sends
#: refused messages as fast as it can then waits on full socket buffers instead of taking the
#: CPU that the gate and the server need for the clients that hold the token.
REFUSAL_PAUSE_S = 0.01
#: Connections accepted per turn of the loop: a burst empties the backlog quickly, and the
#: connections already open still get their turn between batches.
ACCEPT_BATCH = 64
#: Bytes per second the gate reads, over all connections, to throw refused messages away: an
#: unauthenticated sender gets CPU time for no more than this, and waits (TCP) for the rest.
DISCARD_RATE = 256 << 20
_BUFFERED = ("greeting", "ready-header", "ready-body", "header", "command", "prefix")


class _Conn:
    """One client connection and, once it sent an accepted message, its upstream."""

    def __init__(self, sock: socket.socket, uid: int | None, own: bool) -> None:
        self.sock = sock
        self.uid = uid  # the peer's user id where the system says (Linux), else None
        self.own = own  # the peer runs as the server's user
        self.opened = time.monotonic()
        self.answers = 0  # answers the gate gave it before it showed the token
        self.refusals = 0  # of those, refusals (a hello answer is not one)
        self.quiet_until = 0.0  # not read before this time (monotonic): see REFUSAL_PAUSE_S
        self.up: ZmtpConnection | None = None
        self.state = "greeting"  # greeting, ready, header, command, prefix, body, discard
        self.buf = bytearray()
        self.need = 64
        self.flags = 0
        self.size = 0
        self.remaining = 0
        self.header = b""
        self.passing = False  # the message being read continues one that was let through
        self.dropping = False  # the message being read continues one that was refused
        self.to_client = bytearray()
        self.to_up = bytearray()
        self.up_frames = _MessageEnds()  # where the server's reply stream is
        self.held = bytearray()  # gate answers waiting for the end of the server's message
        self.trusted = False  # it sent a message with a valid token
        self.closing = False  # read no more: close once to_client is written


class TokenGate:
    """Accept ZMTP clients on ``endpoint``; forward messages with a valid token upstream.

    ``answer_hello(frame)`` is the reply to a ``hello`` (a frame of at most
    :data:`protocol.HELLO_MAX_BYTES`) from a connection that has not shown the token yet.
    """

    def __init__(
        self,
        endpoint: str,
        upstream: str,
        authorized: Callable[[str], bool],
        limits: Limits,
        answer_hello: Callable[[memoryview], bytes],
    ) -> None:
        self.endpoint = endpoint
        self.upstream = upstream
        self.authorized = authorized
        self.limits = limits
        self.answer_hello = answer_hello
        self.own_uid = os.geteuid() if hasattr(os, "geteuid") else None
        self.listener = _listen(endpoint)
        self.listener.setblocking(False)
        self.bound_endpoint = _endpoint_of(endpoint, self.listener)
        self._sel = selectors.DefaultSelector()
        self._conns: dict[socket.socket, _Conn] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lama-gate", daemon=True)
        self._discard_budget = float(CHUNK)
        self._refilled = time.monotonic()
        self._scratch = bytearray(CHUNK)
        self._paused: set[_Conn] = set()  # connections not read until their quiet_until

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_s: float = 2.0) -> None:
        """Stop after writing what the server already sent (up to ``drain_s`` seconds)."""
        self._drain_until = time.monotonic() + drain_s
        self._stop.set()
        self._thread.join(timeout=drain_s + 5)

    def _done(self) -> bool:
        if not self._stop.is_set():
            return False
        pending = any(c.to_client for c in self._conns.values())
        return not pending or time.monotonic() > self._drain_until

    # ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        self._sel.register(self.listener, selectors.EVENT_READ)
        next_prune = time.monotonic() + 1.0
        try:
            while not self._done():
                for key, events in _trusted_first(self._sel.select(0.05)):
                    if key.fileobj is self.listener:
                        self._accept_pending()
                        continue
                    conn = key.data
                    try:
                        if key.fileobj is conn.sock:
                            if events & selectors.EVENT_WRITE:
                                _flush(conn.sock, conn.to_client)
                            if events & selectors.EVENT_READ:
                                self._read_client(conn)
                        elif conn.up is not None:
                            if events & selectors.EVENT_WRITE:
                                _flush(conn.up.sock, conn.to_up)
                            if events & selectors.EVENT_READ:
                                self._read_upstream(conn)
                        self._update_interest(conn)
                    except (OSError, LamaError, _Closed):
                        self._close(conn)
                    except Exception:  # a bug must cost one connection, never the gate
                        log.exception("gate: unexpected error; closing that connection")
                        self._close(conn)
                self._refill_discard_budget()
                self._wake_paused()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + 1.0
                    self._prune()
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._sel.close()
            self.listener.close()
            if self.endpoint.startswith("ipc://"):
                Path(self.endpoint[len("ipc://") :]).unlink(missing_ok=True)

    def _refill_discard_budget(self) -> None:
        now = time.monotonic()
        was_empty = self._discard_budget < 1
        self._discard_budget = min(
            self._discard_budget + (now - self._refilled) * DISCARD_RATE, float(4 * CHUNK)
        )
        self._refilled = now
        if was_empty and self._discard_budget >= 1:
            for conn in list(self._conns.values()):
                if conn.state == "discard":
                    self._update_interest(conn)

    def _pause(self, conn: _Conn) -> None:
        """Read nothing more from ``conn`` for a while: it just had a message refused."""
        conn.refusals += 1
        conn.quiet_until = time.monotonic() + REFUSAL_PAUSE_S * 2 ** (conn.refusals - 1)
        self._paused.add(conn)

    def _wake_paused(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._paused if now >= c.quiet_until]:
            self._paused.discard(conn)
            self._update_interest(conn)

    def _accept_pending(self) -> None:
        """Accept what waits in the backlog, a bounded batch per turn of the loop."""
        tables: dict[str, str] = {}  # the kernel's socket tables, read once for the batch
        for _ in range(ACCEPT_BATCH):
            if not self._accept(tables):
                return

    def _accept(self, tables: dict[str, str]) -> bool:
        """Accept one connection; False when none was waiting."""
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # out of file descriptors: make room for the next try
            self._make_room(own=True)
            return False
        uid = peer_uid(sock, tables)
        own = uid is not None and uid == self.own_uid
        if not self._admit(uid, own):
            sock.close()
            return True
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock, uid, own)
        conn.to_client += zmtp_greeting()
        self._conns[sock] = conn
        self._sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        return True

    def _admit(self, uid: int | None, own: bool) -> bool:
        """Whether a new connection gets a slot (pushing out a waiting one when full)."""
        if uid is not None and not own:
            waiting = sum(1 for c in self._conns.values() if c.uid == uid and not c.trusted)
            if waiting >= OTHER_USER_CONNECTIONS:
                return False
        return len(self._conns) < MAX_CONNECTIONS or self._make_room(own)

    def _make_room(self, own: bool) -> bool:
        """Close the oldest connection still waiting to show the token, another user's (or an
        unidentified peer's) first; only the server's own user may push out its own."""
        waiting = [c for c in self._conns.values() if not c.trusted and (own or not c.own)]
        if not waiting:
            return False
        self._close(min(waiting, key=lambda c: (c.own, c.opened)))
        return True

    def _prune(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            deadline = OWN_AUTH_DEADLINE_S if conn.own else AUTH_DEADLINE_S
            if not conn.trusted and now - conn.opened > deadline:
                self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._paused.discard(conn)
        if self._conns.pop(conn.sock, None) is None:
            return
        for sock in (conn.sock, conn.up.sock if conn.up else None):
            if sock is not None:
                try:
                    self._sel.unregister(sock)
                except (KeyError, ValueError):
                    pass
        conn.sock.close()
        if conn.up is not None:
            conn.up.close()

    def _update_interest(self, conn: _Conn) -> None:
        if conn.sock not in self._conns:
            return
        if conn.closing and not conn.to_client:
            self._close(conn)
            return
        events = selectors.EVENT_WRITE if conn.to_client else 0
        throttled = conn.state == "discard" and self._discard_budget < 1
        queued = len(conn.to_client) + len(conn.held)
        unread = queued >= (MAX_PENDING if conn.trusted else UNTRUSTED_QUEUE_BYTES)
        quiet = conn in self._paused
        blocked = conn.closing or throttled or unread or quiet
        if len(conn.to_up) < MAX_PENDING and not blocked:
            events |= selectors.EVENT_READ
        self._interest(conn.sock, events, conn)
        if conn.up is not None:
            up_events = selectors.EVENT_WRITE if conn.to_up else 0
            if len(conn.to_client) < MAX_PENDING:
                up_events |= selectors.EVENT_READ
            self._interest(conn.up.sock, up_events, conn)

    def _interest(self, sock: socket.socket, events: int, conn: _Conn) -> None:
        """Watch ``sock`` for ``events``; none at all: stop watching it for now."""
        try:
            registered = self._sel.get_key(sock).events
        except KeyError:
            registered = 0
        if events == registered:
            return
        if not events:
            self._sel.unregister(sock)
        elif registered:
            self._sel.modify(sock, events, conn)
        else:
            self._sel.register(sock, events, conn)

    # ----------------------------------------------------------------------------------------
    # client → gate

    def _read_client(self, conn: _Conn) -> None:
        if len(conn.to_up) >= MAX_PENDING or conn.closing:
            return
        if conn.state == "discard":
            if self._discard_budget < 1:
                return
            want = int(min(conn.remaining, CHUNK, self._discard_budget))
            count = conn.sock.recv_into(self._scratch, want)
            if not count:
                raise _Closed
            self._discard_budget -= count
            conn.remaining -= count
            if conn.remaining == 0:
                self._frame_done(conn)
            return
        if conn.state == "body":
            count = conn.sock.recv_into(self._scratch, min(conn.remaining, CHUNK))
            if not count:
                raise _Closed
            conn.remaining -= count
            _forward(conn.up.sock, conn.to_up, self._scratch, count)
            if conn.remaining == 0:
                self._frame_done(conn)
            return
        data = conn.sock.recv(max(conn.need - len(conn.buf), 1))
        if not data:
            raise _Closed
        conn.buf += data
        self._pump(conn)

    def _pump(self, conn: _Conn) -> None:
        while conn.state in _BUFFERED and len(conn.buf) >= conn.need:
            self._step(conn)

    def _step(self, conn: _Conn) -> None:
        """Act on a complete piece of ``conn.buf`` (``need`` bytes) in the current state."""
        if conn.state == "greeting":
            self._on_greeting(conn)
        elif conn.state in ("ready-header", "header"):
            self._on_frame_header(conn)
        elif conn.state == "ready-body":
            if command_name(self._take(conn)) != b"READY":
                raise _Closed
            self._expect_header(conn, "header")
        elif conn.state == "command":
            body = self._take(conn)
            if command_name(body) == b"PING":
                conn.to_client += zmtp_frame(b"\x04PONG" + body[7:], command=True)
            self._expect_header(conn, "header")
        elif conn.state == "prefix":
            self._on_prefix(conn, self._take(conn))

    @staticmethod
    def _take(conn: _Conn) -> bytes:
        """The ``need`` bytes the current state waited for, taken off the buffer."""
        piece = bytes(conn.buf[: conn.need])
        del conn.buf[: conn.need]
        return piece

    def _on_greeting(self, conn: _Conn) -> None:
        greeting = self._take(conn)
        if greeting[0] != 0xFF or greeting[9] != 0x7F or greeting[10] < 3:
            raise _Closed
        if greeting[12:32].rstrip(b"\x00") != b"NULL":
            raise _Closed
        conn.to_client += zmtp_ready("ROUTER")
        self._expect_header(conn, "ready-header")

    def _on_frame_header(self, conn: _Conn) -> None:
        flags = conn.buf[0]
        if flags & FLAG_LONG and conn.need == 2:
            conn.need = 9  # the long form: an 8-byte size follows the flags
            return
        size = struct.unpack(">Q", bytes(conn.buf[1:9]))[0] if flags & FLAG_LONG else conn.buf[1]
        conn.header = self._take(conn)
        conn.flags, conn.size = flags, size
        if conn.state == "ready-header" or flags & FLAG_COMMAND:
            if not flags & FLAG_COMMAND or size > MAX_COMMAND_BYTES:
                raise _Closed
            conn.state = "ready-body" if conn.state == "ready-header" else "command"
            conn.need = size
            return
        if size > self.limits.max_message_bytes:
            raise _Closed  # what libzmq's MAXMSGSIZE does
        if conn.passing or conn.dropping:
            self._stream(conn, forward=conn.passing, prefix=b"")
            return
        conn.state, conn.need = "prefix", min(size, protocol.SMALL_MESSAGE_BYTES)

    def _on_prefix(self, conn: _Conn, prefix: bytes) -> None:
        """A message's first bytes: let it through to the server, answer it, or refuse it."""
        try:
            if conn.flags & FLAG_MORE:  # later frames would pass unchecked: refuse the message
                raise ProtocolError(
                    "bad_request", "a request is one frame; this message has several"
                )
            op = protocol.screen(prefix, conn.size, self.authorized)
        except ProtocolError as exc:
            self._answer(conn, protocol.error_reply(exc.code, exc.message, exc.request_id))
            if not conn.trusted:
                self._pause(conn)
        else:
            if op != "hello" or conn.up is not None:  # a valid token (or a trusted hello)
                self._connect_upstream(conn)
                conn.trusted = True
                self._stream(conn, forward=True, prefix=prefix)
                return
            self._answer(conn, self.answer_hello(memoryview(prefix)))
        if conn.closing:
            conn.state = "closed"  # nothing more is read from it
            return
        self._stream(conn, forward=False, prefix=prefix)

    def _answer(self, conn: _Conn, payload: bytes) -> None:
        """A reply from the gate itself. A connection without the token gets a few, while it
        reads them, and is closed after the last."""
        if conn.trusted:
            # The server's reply may be half forwarded: an answer put in its middle would
            # corrupt both, so it waits for the end of that message.
            if conn.held or not conn.up_frames.between_messages:
                conn.held += zmtp_frame(payload)
            else:
                conn.to_client += zmtp_frame(payload)
            return
        conn.answers += 1
        if len(conn.to_client) < UNTRUSTED_QUEUE_BYTES:
            conn.to_client += zmtp_frame(payload)
        if conn.answers >= UNTRUSTED_ANSWERS:
            conn.closing = True

    def _expect_header(self, conn: _Conn, state: str) -> None:
        conn.state, conn.need = state, 2

    def _stream(self, conn: _Conn, forward: bool, prefix: bytes) -> None:
        """Pass (or drop) the rest of the current frame; ``prefix`` was already read."""
        if forward:
            conn.to_up += conn.header + prefix
        more = bool(conn.flags & FLAG_MORE)
        conn.passing, conn.dropping = (forward and more), (not forward and more)
        conn.remaining = conn.size - len(prefix)
        # Bytes already buffered past the prefix belong to this frame (or the next one).
        take = min(conn.remaining, len(conn.buf))
        if take:
            if forward:
                conn.to_up += conn.buf[:take]
            del conn.buf[:take]
            conn.remaining -= take
        conn.state = "body" if forward else "discard"
        if conn.remaining == 0:
            self._frame_done(conn)
        elif forward:
            _flush(conn.up.sock, conn.to_up)

    def _frame_done(self, conn: _Conn) -> None:
        self._expect_header(conn, "header")
        self._pump(conn)

    def _connect_upstream(self, conn: _Conn) -> None:
        if conn.up is not None:
            return
        conn.up = ZmtpConnection(self.upstream, 5.0)
        conn.up.sock.setblocking(False)
        self._sel.register(conn.up.sock, selectors.EVENT_READ, conn)

    # ----------------------------------------------------------------------------------------
    # upstream → client

    def _read_upstream(self, conn: _Conn) -> None:
        if len(conn.to_client) >= MAX_PENDING:
            return
        count = conn.up.sock.recv_into(self._scratch, CHUNK)
        if not count:  # the server closed (it stops): deliver what it sent, then hang up
            self._sel.unregister(conn.up.sock)
            conn.up.close()
            conn.up, conn.closing = None, True
            return
        with memoryview(self._scratch) as view, view[:count] as data:
            conn.up_frames.feed(data)
        _forward(conn.sock, conn.to_client, self._scratch, count)
        if conn.held and conn.up_frames.between_messages:
            conn.to_client += conn.held
            conn.held.clear()
            _flush(conn.sock, conn.to_client)


def _trusted_first(ready: list) -> list:
    """Events of trusted connections first: hostile peers never delay a client's reply."""
    return sorted(ready, key=lambda item: not (item[0].data is not None and item[0].data.trusted))


class _MessageEnds:
    """Follows the frame headers of a ZMTP byte stream (bodies are skipped, not copied) to
    tell whether it stands between two whole messages."""

    def __init__(self) -> None:
        self.header = bytearray()  # the header of the next frame, as far as it arrived
        self.left = 0  # body bytes of the current frame still to come
        self.more = False  # the current frame is not its message's last

    @property
    def between_messages(self) -> bool:
        return not self.header and not self.left and not self.more

    def feed(self, data: memoryview) -> None:
        """Account for ``data``, the next bytes of the stream."""
        at = 0
        while at < len(data):
            if self.left:
                step = min(self.left, len(data) - at)
                self.left -= step
                at += step
                continue
            self.header.append(data[at])
            at += 1
            flags = self.header[0]
            if len(self.header) == (9 if flags & FLAG_LONG else 2):
                self.left = int.from_bytes(self.header[1:], "big")
                # commands never carry MORE and do not end a message's run of frames
                if not flags & FLAG_COMMAND:
                    self.more = bool(flags & FLAG_MORE)
                self.header.clear()


class _Closed(Exception):
    """The peer closed, or broke the protocol: close both sides."""


def _flush(sock: socket.socket, pending: bytearray) -> None:
    """Write what the socket takes now; keep the rest."""
    while pending:
        with memoryview(pending) as view, view[:CHUNK] as chunk:  # no copy of the chunk
            sent = _send_some(sock, chunk)
        if sent == 0:
            return
        del pending[:sent]


def _forward(sock: socket.socket, pending: bytearray, buf: bytearray, count: int) -> None:
    """Pass ``buf[:count]`` on to ``sock``: straight from ``buf`` when nothing waits before
    it (the common case: one copy into ``buf``, none into ``pending``), the rest queued."""
    with memoryview(buf) as view, view[:count] as data:
        sent = 0 if pending else _send_some(sock, data)
        if sent < count:
            pending += data[sent:]
    _flush(sock, pending)


def _send_some(sock: socket.socket, data: memoryview) -> int:
    """Bytes of ``data`` a non-blocking socket took (0 when it would block)."""
    try:
        return sock.send(data)
    except (BlockingIOError, InterruptedError):
        return 0


def _listen(endpoint: str) -> socket.socket:
    if endpoint.startswith("ipc://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(endpoint[len("ipc://") :])
    else:
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        host = host.strip("[]")
        host = "127.0.0.1" if host == "localhost" else host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0 if port == "*" else int(port)))
    # The system's largest backlog: a burst of connections (a program opening hundreds) must
    # not leave a client that holds the token refused at connect (ipc:// fails at once when
    # the backlog is full) before the gate has had a turn to accept and sort them.
    sock.listen(socket.SOMAXCONN)
    return sock


def _endpoint_of(endpoint: str, sock: socket.socket) -> str:
    if endpoint.startswith("ipc://"):
        return endpoint
    host, port = sock.getsockname()[:2]
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def can_gate(endpoint: str) -> bool:
    """The gate serves loopback TCP and (where Unix sockets exist) ipc:// endpoints."""
    if endpoint.startswith("ipc://"):
        return hasattr(socket, "AF_UNIX") and not endpoint[len("ipc://") :].startswith("@")
    return endpoint.startswith("tcp://") and hasattr(socket, "AF_UNIX")
