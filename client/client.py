"""Client for lama-server: transports, pixel files, :class:`LamaClient`; standard library only.

It runs inside Krita's and GIMP's own Python, where ``pip`` is not available (and GIMP 3.2 on
Windows cannot even load pyzmq). When ``zmq`` and ``msgpack`` import, it uses them; otherwise it
speaks ZMTP 3.x (NULL mechanism, socket type DEALER) over a plain socket and encodes msgpack
itself (:mod:`.wire`). ``lama-server install-plugin`` copies the whole package into each plugin
as ``lama_client/``, so it must never import from ``lama_server``.

Wire protocol: ``docs/protocol.md`` (version 1.6). Before each request the client sends a
``hello`` with a random nonce and checks the server's HMAC, keyed by the token, of both sides'
nonces and the endpoint it dialled: only the real lama-server knows the token, and only one
listening at that endpoint can make that proof, so neither the token nor pixels go to an
impostor or a relay. Until the proof checks out, no frame larger than 64 KiB is read.

Pixel files (1.2): a server on this machine names its pixel folder in the ``hello`` reply; the
client then writes large images into a file there and sends only the file's name, and the
answer comes back in the same file. That saves the copies of 20 MB messages; when the folder
is out of sight (a sandboxed host) or the server cannot use the file, pixels go inline.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import os
import secrets
import select
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import Cancelled, ClusterUnavailable, LamaError, RequestTimeout, ServerUnavailable
from .wire import (
    FLAG_COMMAND,
    FLAG_LONG,
    FLAG_MORE,
    MAX_COMMAND_BYTES,
    MAX_REPLY_BYTES,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    UNVERIFIED_FRAME_BYTES,
    command_name,
    hello_proof,
    pack_parts,
    parse_properties,
    unpackb,
    zmtp_frame,
    zmtp_frame_header,
    zmtp_greeting,
    zmtp_ready,
)

try:  # the real libraries, where the host has them
    import msgpack as _msgpack
    import zmq as _zmq
except ImportError:  # pragma: no cover - exercised by forcing use_pyzmq=False in tests
    _zmq = None
    _msgpack = None

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5557"
#: The protocol minor that added ``options.resize_limit``: an older server refuses the option
#: as unknown, so the client names the cause before sending it.
RESIZE_LIMIT_MINOR = 6
SMALL_SEND_BYTES = 65536  # messages up to this size go out header and body in one send
_PIXEL_FILE_FLAGS = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Token


def default_token_path() -> str:
    """``$LAMA_TOKEN_FILE``, else the per-user config folder's ``lama-inpaint/token``."""
    if os.environ.get("LAMA_TOKEN_FILE"):
        return os.environ["LAMA_TOKEN_FILE"]
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or os.path.join(
            os.path.expanduser("~"), "AppData", "Roaming"
        )
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "lama-inpaint", "token")


def read_token(path: str | None = None) -> str | None:
    """The token to send: ``$LAMA_TOKEN`` if set, else the token file's content, else None."""
    if os.environ.get("LAMA_TOKEN"):
        return os.environ["LAMA_TOKEN"].strip()
    token_path = path or default_token_path()
    try:
        with open(token_path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None
    except UnicodeDecodeError:
        raise LamaError(
            "unauthorized",
            f"token file {token_path} is not UTF-8 text; delete it and restart lama-server",
        ) from None


def canonical_endpoint(endpoint: str) -> str:
    """The one spelling of an endpoint that both ends put into the ``hello`` proof:
    ``tcp://ADDRESS:PORT`` with a numeric address (``localhost`` and ``*`` are 127.0.0.1, IPv6
    compressed in brackets), ``ipc://`` with the socket's real path."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        return "ipc://" + (path if path.startswith("@") else os.path.realpath(path))
    if not endpoint.startswith("tcp://"):
        return endpoint
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    host = host.strip("[]")
    host = "127.0.0.1" if host in ("", "*", "localhost") else host
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        pass  # a host name: compared as written
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class ZmtpConnection:
    """One ZMTP 3.x DEALER connection (NULL mechanism) over TCP or a Unix socket.

    Raises ServerUnavailable if nothing ZeroMQ-like answers within ``connect_timeout``.
    """

    def __init__(self, endpoint: str, connect_timeout: float) -> None:
        self.endpoint = endpoint
        self._more = False
        deadline = time.monotonic() + connect_timeout
        self.sock = _open_socket(endpoint, connect_timeout)
        try:
            # Signature and major version first, the rest after the server's greeting: a server
            # of another mechanism (CURVE) hangs up as soon as it reads our NULL, and this way
            # we have read which mechanism it wants before that.
            ours = zmtp_greeting()
            self.sock.sendall(ours[:11])
            greeting = self._recv_exact(64, deadline)
            if greeting[0] != 0xFF or greeting[9] != 0x7F or greeting[10] < 3:
                raise ServerUnavailable(f"{endpoint}: the peer is not a ZeroMQ (ZMTP 3) server")
            mechanism = greeting[12:32].rstrip(b"\x00").decode("ascii", "replace")
            if mechanism != "NULL":
                raise ServerUnavailable(
                    f"{endpoint}: the server requires the {mechanism} security mechanism; this "
                    "built-in client only speaks NULL (for a remote CURVE server install pyzmq)"
                )
            self.sock.sendall(ours[11:] + zmtp_ready("DEALER"))
            command, body = self._recv_frame(deadline)
            name = command_name(body) if command else b""
            if name == b"ERROR":
                reason = body[7 : 7 + body[6]].decode("utf-8", "replace") if len(body) > 6 else ""
                raise ServerUnavailable(f"{endpoint}: the server refused the connection ({reason})")
            if name != b"READY":
                raise ServerUnavailable(f"{endpoint}: unexpected handshake from the server")
            socket_type = parse_properties(body[6:]).get("Socket-Type", b"")
            if socket_type not in (b"ROUTER", b"DEALER"):
                raise ServerUnavailable(f"{endpoint}: server socket type {socket_type!r}")
        except RequestTimeout:
            self.close()
            raise ServerUnavailable(
                f"{endpoint}: no ZeroMQ handshake within {connect_timeout:g} s "
                "(is something other than lama-server listening there?)"
            ) from None
        except LamaError:
            self.close()
            raise
        except (OSError, ValueError, IndexError) as exc:
            self.close()
            raise ServerUnavailable(f"{endpoint}: handshake failed ({exc})") from exc

    def send(self, payload: bytes | list[bytes | memoryview]) -> None:
        """Send one single-frame message (bytes, or the pieces of one, as :func:`pack_parts`
        gives them); OSError if the connection is broken."""
        self.sock.settimeout(30)
        parts = [payload] if isinstance(payload, (bytes, bytearray, memoryview)) else payload
        size = sum(len(p) for p in parts)
        header = zmtp_frame_header(size)
        if size <= SMALL_SEND_BYTES:  # one segment for small messages (hello, ping)
            self.sock.sendall(b"".join([header, *parts]))
            return
        # The pieces sent one by one: no copy of a many-MB body just to prepend 9 bytes.
        self.sock.sendall(header)
        for part in parts:
            self.sock.sendall(part)

    def is_dead(self) -> bool:
        """True if the server closed the connection since we last used it."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if readable:
                return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        return False

    def recv(self, timeout: float, limit: int = MAX_REPLY_BYTES) -> bytes | None:
        """Receive one message (frames joined), or None if none starts within ``timeout``.

        A message announced larger than ``limit`` bytes is a :class:`LamaError` before
        anything is allocated. Heartbeat PINGs are answered with PONG; other commands are
        skipped.
        """
        until = time.monotonic() + max(timeout, 0)
        try:
            while True:
                wait = max(until - time.monotonic(), 0)
                readable, _, _ = select.select([self.sock], [], [], wait)
                if not readable:
                    return None
                # Once a frame starts it is read whole (a generous bound against a stalled peer).
                deadline = time.monotonic() + 60.0
                command, body = self._recv_frame(deadline, limit)
                if command:
                    if command_name(body) == b"PING":
                        # PING = name, 2-byte TTL, context; PONG echoes the context.
                        self.sock.sendall(zmtp_frame(b"\x04PONG" + body[7:], command=True))
                    continue
                parts = [body]
                while self._more:
                    command, body = self._recv_frame(deadline, limit - sum(map(len, parts)))
                    if not command:
                        parts.append(body)
                return parts[0] if len(parts) == 1 else b"".join(parts)
        except OSError as exc:
            raise ServerUnavailable(f"{self.endpoint}: connection lost ({exc})") from exc

    def _recv_frame(
        self, deadline: float, limit: int = MAX_REPLY_BYTES
    ) -> tuple[bool, bytearray]:
        flags = self._recv_exact(1, deadline)[0]
        if flags & FLAG_LONG:
            (size,) = struct.unpack(">Q", self._recv_exact(8, deadline))
        else:
            size = self._recv_exact(1, deadline)[0]
        command = bool(flags & FLAG_COMMAND)
        if size > (MAX_COMMAND_BYTES if command else limit):
            if limit < MAX_REPLY_BYTES:
                raise LamaError(
                    "unverified",
                    f"{self.endpoint}: a frame of {size} bytes before the server proved it "
                    f"knows your token (at most {limit} read): not your lama-server",
                )
            raise LamaError("too_large", f"reply of {size} bytes exceeds the client's limit")
        if not command:  # commands never carry MORE; a command between frames keeps the state
            self._more = bool(flags & FLAG_MORE)
        return command, self._recv_exact(size, deadline)

    def _recv_exact(self, n: int, deadline: float) -> bytearray:
        # recv_into a buffer of the final size: no growing, no chunk copies (frames are MBs).
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout(f"{self.endpoint}: no answer in time")
            self.sock.settimeout(min(remaining, 0.5))
            try:
                count = self.sock.recv_into(view[got:], n - got)
            except TimeoutError:
                continue
            if not count:
                raise ServerUnavailable(
                    f"{self.endpoint}: the server closed the connection "
                    "(it stopped or restarted); try again"
                )
            got += count
        return buf  # bytes-like; callers only slice and decode it

    def close(self) -> None:
        """Close the socket (idempotent)."""
        try:
            self.sock.close()
        except OSError:
            pass


def peek_mechanism(endpoint: str, timeout: float) -> str | None:
    """The security mechanism a ZeroMQ server at ``endpoint`` asks for, or None if unknown."""
    try:
        sock = _open_socket(endpoint, timeout)
    except LamaError:
        return None
    try:
        sock.settimeout(timeout)
        sock.sendall(zmtp_greeting()[:11])
        greeting = b""
        while len(greeting) < 32:
            chunk = sock.recv(32 - len(greeting))
            if not chunk:
                return None
            greeting += chunk
        if greeting[0] != 0xFF or greeting[9] != 0x7F:
            return None
        return greeting[12:32].rstrip(b"\x00").decode("ascii", "replace")
    except OSError:
        return None
    finally:
        sock.close()


def _open_socket(endpoint: str, timeout: float) -> socket.socket:
    if endpoint.startswith("tcp://"):
        hostport = endpoint[len("tcp://") :]
        host, _, port = hostport.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if host == "*":
            host = "127.0.0.1"
        try:
            sock = socket.create_connection((host, int(port)), timeout=timeout)
        except ValueError:
            raise LamaError("bad_endpoint", f"bad endpoint {endpoint!r}") from None
        except OSError as exc:
            raise ServerUnavailable(
                f"no lama-server at {endpoint} ({exc.strerror or exc}). Start it with: lama-server"
            ) from exc
        # Without this, Nagle's algorithm holds a message's last small segment until the server
        # acknowledges the previous one, and delayed ACKs make that 40 ms per request on Linux.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    if endpoint.startswith("ipc://"):
        if not hasattr(socket, "AF_UNIX"):
            raise LamaError("bad_endpoint", "ipc:// endpoints need Unix sockets")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(endpoint[len("ipc://") :])
        except OSError as exc:
            sock.close()
            raise ServerUnavailable(
                f"no lama-server at {endpoint} ({exc.strerror or exc}). Start it with: lama-server"
            ) from exc
        return sock
    raise LamaError("bad_endpoint", f"unsupported endpoint {endpoint!r} (tcp:// or ipc://)")


# --------------------------------------------------------------------------------------------
# Transports: the same three calls over pyzmq or over ZMTP


class _StdlibTransport:
    """send/recv/close over our own ZMTP connection, reconnecting when the old one died."""

    def __init__(self, endpoint: str, connect_timeout: float) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.conn: ZmtpConnection | None = None
        self.encrypted = False  # NULL mechanism only

    def send(self, payload: bytes | list[bytes | memoryview]) -> None:
        if self.conn is not None and self.conn.is_dead():
            self.close()  # the server restarted since the last request: reconnect transparently
        fresh = self.conn is None
        if fresh:
            self.conn = ZmtpConnection(self.endpoint, self.connect_timeout)
        try:
            self.conn.send(payload)
            return
        except OSError as exc:
            self.close()
            if fresh:
                raise ServerUnavailable(f"{self.endpoint}: cannot send ({exc})") from exc
        # A ZMTP message counts only once its last byte arrives, so a send that failed delivered
        # nothing: reconnect once and send again.
        self.conn = ZmtpConnection(self.endpoint, self.connect_timeout)
        try:
            self.conn.send(payload)
        except OSError as exc:
            self.close()
            raise ServerUnavailable(f"{self.endpoint}: cannot send the request ({exc})") from exc

    def recv(self, timeout: float, limit: int = MAX_REPLY_BYTES) -> bytes | None:
        if self.conn is None:
            raise ServerUnavailable(f"{self.endpoint}: not connected")
        try:
            return self.conn.recv(timeout, limit)
        except LamaError:
            self.close()  # the stream is broken or out of step: never reuse it
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _PyzmqTransport:
    """send/recv/close over a pyzmq DEALER; a new socket after any failure or timeout."""

    def __init__(
        self, endpoint: str, connect_timeout: float, server_key: bytes | str | None = None
    ) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.server_key = server_key.encode() if isinstance(server_key, str) else server_key
        self.encrypted = bool(self.server_key)  # CURVE: the server's key is proven already
        self.ctx = _zmq.Context.instance()
        self.sock = None

    def _open(self) -> Any:
        sock = self.ctx.socket(_zmq.DEALER)
        sock.setsockopt(_zmq.LINGER, 0)
        sock.setsockopt(_zmq.IMMEDIATE, 1)  # queue only on completed connections
        sock.setsockopt(_zmq.RECONNECT_IVL, 100)
        sock.setsockopt(_zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(_zmq.IPV6, 1)  # else libzmq cannot reach tcp://[::1]:port
        sock.setsockopt(_zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        if self.server_key:
            public, secret = _zmq.curve_keypair()  # an ephemeral client identity
            sock.curve_serverkey = self.server_key
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        try:
            sock.connect(self.endpoint)
        except _zmq.ZMQError as exc:
            sock.close(0)
            raise LamaError("bad_endpoint", f"bad endpoint {self.endpoint!r} ({exc})") from None
        return sock

    def send(self, payload: bytes) -> None:
        if self.sock is None:
            self.sock = self._open()
        # With IMMEDIATE, POLLOUT means a completed handshake: a server that is down shows here.
        try:
            if self.sock.poll(int(self.connect_timeout * 1000), _zmq.POLLOUT):
                self.sock.send(payload, _zmq.NOBLOCK, copy=False)
                return
        except _zmq.ZMQError as exc:
            self.close()
            raise ServerUnavailable(f"{self.endpoint}: cannot send the request ({exc})") from exc
        self.close()
        probe_s = min(self.connect_timeout, 0.5)
        mechanism = None if self.server_key else peek_mechanism(self.endpoint, probe_s)
        if mechanism == "CURVE":
            raise ServerUnavailable(
                f"the server at {self.endpoint} is CURVE-encrypted: pass its public key "
                "(--server-key, or server_key=; the server.key file beside its token)"
            )
        raise ServerUnavailable(f"no lama-server at {self.endpoint}. Start it with: lama-server")

    def recv(self, timeout: float, limit: int = MAX_REPLY_BYTES) -> bytes | None:
        """As :meth:`ZmtpConnection.recv`; libzmq bounds a message by ``MAXMSGSIZE``, set to
        the protocol's largest, and commits memory as bytes arrive, so ``limit`` is checked
        on what came (a message over it is refused)."""
        if self.sock is None:
            raise ServerUnavailable(f"{self.endpoint}: not connected")
        try:
            if not self.sock.poll(int(timeout * 1000), _zmq.POLLIN):
                return None
            message = b"".join(self.sock.recv_multipart(_zmq.NOBLOCK, copy=True))
        except _zmq.ZMQError as exc:
            self.close()
            raise ServerUnavailable(f"{self.endpoint}: connection lost ({exc})") from exc
        if len(message) > limit:
            self.close()
            raise LamaError("unverified", f"{self.endpoint}: a reply of {len(message)} bytes "
                            "before the server proved it knows your token")  # fmt: skip
        return message

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None


# --------------------------------------------------------------------------------------------
# Pixel files


class _PixelFile:
    """This client's file in the server's pixel folder (see ``docs/protocol.md``).

    Written and read with plain file calls, not mapped: a full disk is then an ``OSError``
    here (and the pixels go inline), never a crash of the host application.
    """

    def __init__(self, folder: str) -> None:
        self.name = f"{os.getpid()}-{secrets.token_hex(8)}.px"
        self.path = os.path.join(folder, self.name)
        self.file = io.FileIO(os.open(self.path, _PIXEL_FILE_FLAGS, 0o600), "r+")

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data).cast("B")
        self.file.seek(offset)
        while view:
            view = view[self.file.write(view) :]

    def read(self, offset: int, size: int) -> bytes:
        self.file.seek(offset)
        data = self.file.read(size)  # one read for a whole file in the page cache
        while len(data) < size:
            more = self.file.read(size - len(data))
            if not more:
                raise LamaError("bad_reply", "the server's answer in the pixel file is short")
            data += more
        return data

    def removed(self) -> bool:
        """Whether the file lost its name (the server swept it, or its folder went away)."""
        try:
            return os.fstat(self.file.fileno()).st_nlink == 0
        except OSError:
            return True

    def close(self) -> None:
        try:
            self.file.close()
        finally:
            try:
                os.unlink(self.path)
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# The client


@dataclass
class ImageData:
    """Pixels as the host stores them, tagged with their format (see docs/protocol.md)."""

    width: int
    height: int
    format: str
    data: bytes


class LamaClient:
    """Talks to one lama-server. Not thread-safe: use one client per thread."""

    #: Seconds to wait for the server to confirm a cancel before giving up on the request.
    cancel_grace = 5.0
    #: Requests with at least this many bytes of pixels use a pixel file when they can.
    pixel_file_min_bytes = 1 << 18

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        token: str | None = None,
        connect_timeout: float = 2.0,
        timeout: float = 300.0,
        use_pyzmq: bool | None = None,
        server_key: bytes | str | None = None,
        verify_server: bool = True,
        pixel_files: bool = True,
    ) -> None:
        """``timeout``: seconds to wait for a request's next sign of life (a progress or queued
        message, or its answer): a long job that keeps reporting progress is never cut off.

        ``server_key``: the server's CURVE public key (Z85), for a remote server; needs pyzmq.

        ``verify_server``: before each request, make the server prove it knows the token
        (``hello``); False only to talk to a lama-server older than protocol 1.1.
        ``pixel_files``: pass large images through the server's pixel folder when it offers
        one (a server on this machine); False always sends them inside the messages.
        """
        if use_pyzmq is None:
            use_pyzmq = _zmq is not None and _msgpack is not None
        if use_pyzmq and (_zmq is None or _msgpack is None):
            raise LamaError("unavailable", "pyzmq/msgpack are not installed")
        if server_key is not None and not use_pyzmq:
            raise LamaError("unavailable", "a CURVE-encrypted (remote) server needs pyzmq")
        self.endpoint = endpoint
        self.token = token if token is not None else read_token()
        self.timeout = timeout
        self.verify_server = verify_server
        self.uses_pyzmq = use_pyzmq
        self.pixel_files = pixel_files
        self._pixel_dir: str | None = None  # from the last verified hello
        self._server_minor: int | None = None  # its protocol_minor (None: not known)
        self._pixel_file: _PixelFile | None = None
        self._final_reply = False  # whether the last _call got its final reply
        if use_pyzmq:
            self._pack: Callable[[Any], Any] = lambda o: _msgpack.packb(o, use_bin_type=True)
            self._unpack: Callable[[bytes], Any] = lambda b: _msgpack.unpackb(b, raw=False)
        else:
            self._pack, self._unpack = pack_parts, unpackb  # pieces: images are not copied
        if use_pyzmq:
            self._transport = _PyzmqTransport(endpoint, connect_timeout, server_key)
        else:
            self._transport = _StdlibTransport(endpoint, connect_timeout)

    def __enter__(self) -> LamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the connection (the next request opens a new one) and the pixel file."""
        self._transport.close()
        self._drop_pixel_file()

    #: Whether the last ``inpaint`` passed its pixels through a pixel file.
    last_used_pixel_file = False
    #: The server's ``timing`` of the last ``inpaint`` (``queue_ms``, ``model_ms``, ``total_ms``).
    last_timing: dict | None = None

    def ping(self) -> dict:
        """Round trip to the server; returns its reply (``pong``, ``version``)."""
        return self._call({"op": "ping"}, timeout=min(self.timeout, 10.0))

    def info(self) -> dict:
        """The server's state: model, device, precision, version, limits, queue."""
        return self._call({"op": "info"}, timeout=min(self.timeout, 10.0))["info"]

    def inpaint(
        self,
        image: ImageData,
        mask: bytes,
        options: dict | None = None,
        progress: Callable[[float, str], None] | None = None,
        cancel: threading.Event | None = None,
        resize_limit: int | None = None,
    ) -> ImageData:
        """Fill the masked area; the answer comes in ``image.format``.

        ``resize_limit`` (protocol 1.6): the longest side, in pixels, the server fills a window
        at; a larger window is filled scaled down to it and the fill scaled up into the hole
        (faster, softer detail; pixels outside the hole never change). None: not sent, so the
        server's default applies (1024) and servers older than 1.6 keep working; a value on a
        server known to be older raises ``LamaError`` (code ``old_server``) before sending.
        """
        if cancel is not None and cancel.is_set():
            raise Cancelled()  # cancelled before it started: do not bother the server
        if resize_limit is not None:
            options = {**(options or {}), "resize_limit": resize_limit}
        return self._inpaint(image, mask, options, progress, cancel, retries=1)

    def segment(
        self,
        image: ImageData,
        box: tuple[float, float, float, float] | None = None,
        points: Sequence[tuple[float, float]] = (),
        labels: Sequence[int] = (),
        progress: Callable[[float, str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> bytes:
        """The mask of the object the prompts point at: ``width*height`` bytes, 255 on the
        object, 0 elsewhere (protocol 1.4). ``box`` = (x0, y0, x1, y1) and ``points`` (x, y)
        in ``image`` pixels; ``labels`` 1 = on the object, 0 = background (default all 1).
        Repeated prompts on the same pixels cost the server only its decoder (it caches the
        window's embedding); ``last_timing["embedding_cached"]`` says whether it did."""
        labels = list(labels) if labels else [1] * len(points)
        prompt: dict = {"points": [[float(x), float(y)] for x, y in points], "labels": labels}
        if box is not None:
            prompt["box"] = [float(v) for v in box]
        self._final_reply = False
        pixel_file: _PixelFile | None = None
        try:
            verified = self._server_verified()
            pixel_file, _ = self._pixels_into_file(image, b"") if verified else (None, False)
            request = {"op": "segment", "image": self._image_field(image, pixel_file), **prompt}
            reply = self._call(request, timeout=self.timeout, progress=progress, cancel=cancel,
                               verified=verified)  # fmt: skip
        except BaseException as exc:
            unseen = isinstance(exc, LamaError) and exc.code == "no_pixel_file"
            self._after_failure(pixel_file, unseen_file=unseen)
            if unseen and pixel_file is not None:
                self.pixel_files = False  # the next call sends inline
            raise
        return self._mask_from_reply(reply, image)

    def _mask_from_reply(self, reply: dict, image: ImageData) -> bytes:
        timing = reply.get("timing")
        self.last_timing = timing if isinstance(timing, dict) else None
        mask = reply.get("mask")
        try:
            size_ok = (int(mask["w"]), int(mask["h"])) == (image.width, image.height)
            data = bytes(mask["data"])
        except (TypeError, KeyError, ValueError):
            raise LamaError("bad_reply", "the server's reply has no usable mask") from None
        if not size_ok or len(data) != image.width * image.height:
            raise LamaError("bad_reply", "the server's mask does not match the image's size")
        return data

    def _inpaint(
        self,
        image: ImageData,
        mask: bytes,
        options: dict | None,
        progress: Callable[[float, str], None] | None,
        cancel: threading.Event | None,
        retries: int,
    ) -> ImageData:
        self.last_used_pixel_file = False
        self._final_reply = False
        pixel_file: _PixelFile | None = None
        try:
            verified = self._server_verified()
            self._check_options_known(options)
            pixel_file, reused = self._pixels_into_file(image, mask) if verified else (None, False)
            request = self._inpaint_request(image, mask, options, pixel_file)
            reply = self._call(request, timeout=self.timeout, progress=progress, cancel=cancel,
                               verified=verified)  # fmt: skip
        except LamaError as exc:
            self._after_failure(pixel_file, unseen_file=exc.code == "no_pixel_file")
            if pixel_file is None or exc.code != "no_pixel_file":
                raise
            if not (reused and retries > 0):
                # A fresh file it cannot see: this server and this client share no folder (a
                # sandboxed host). A reused one may just have been swept while we were idle.
                self.pixel_files = False
            return self._inpaint(image, mask, options, progress, cancel, retries - 1)
        except BaseException:
            # Abandoned mid-request (a progress callback raised, Ctrl-C).
            self._after_failure(pixel_file, unseen_file=False)
            raise
        return self._image_from_reply(reply, image, pixel_file)

    def _check_options_known(self, options: dict | None) -> None:
        """Refuse, in words, an option the verified server's protocol is too old for (it would
        answer ``unknown options``); a server of unknown minor gets the request."""
        minor = self._server_minor
        if options and "resize_limit" in options and minor is not None and (
            minor < RESIZE_LIMIT_MINOR
        ):
            raise LamaError(
                "old_server",
                f"the server at {self.endpoint} speaks protocol 1.{minor}; the processing size "
                f"(resize_limit) needs 1.{RESIZE_LIMIT_MINOR} or newer: update lama-server "
                "(pip install -U lama-inpaint) and restart it, or set the processing size back "
                "to its default (Full)",
            )

    def _pixels_into_file(self, image: ImageData, mask: bytes) -> tuple[_PixelFile | None, bool]:
        """The pixel file holding the request's pixels (None: send them inline), and whether
        an earlier request used it."""
        pixel_file, reused = self._pixel_file_for(len(image.data) + len(mask))
        if pixel_file is None:
            return None, False
        try:
            pixel_file.write(0, image.data)
            pixel_file.write(len(image.data), mask)
        except OSError:  # e.g. the folder's file system is full: send pixels inline
            self._drop_pixel_file()
            self.pixel_files = False
            return None, False
        return pixel_file, reused

    def _after_failure(self, pixel_file: _PixelFile | None, unseen_file: bool) -> None:
        """Clean up after a request that failed or was abandoned (``unseen_file``: the server
        said it cannot see the pixel file)."""
        if not self._final_reply:
            # Abandoned: a new connection next time, so the server notices and stops working
            # on it.
            self._transport.close()
        if pixel_file is not None and (unseen_file or not self._final_reply):
            # The server cannot see the file, or it may still write into it (the request was
            # abandoned): never reuse it.
            self._drop_pixel_file()

    def _image_from_reply(
        self, reply: dict, image: ImageData, pixel_file: _PixelFile | None
    ) -> ImageData:
        """The answer of an ``inpaint`` reply, read from the reply or from the pixel file."""
        timing = reply.get("timing")
        self.last_timing = timing if isinstance(timing, dict) else None
        out = reply.get("image")
        try:
            w, h, fmt = int(out["w"]), int(out["h"]), str(out["format"])
            if pixel_file is None:
                return ImageData(w, h, fmt, bytes(out["data"]))
            same_place = out["file"] == {"name": pixel_file.name, "offset": 0}
            if (w, h, fmt) != (image.width, image.height, image.format) or not same_place:
                raise LamaError("bad_reply", "the server answered in another pixel file")
            self.last_used_pixel_file = True
            return ImageData(w, h, fmt, pixel_file.read(0, len(image.data)))
        except (TypeError, KeyError, ValueError, OSError):
            raise LamaError("bad_reply", "the server's reply has no usable image") from None

    @staticmethod
    def _inpaint_request(
        image: ImageData, mask: bytes, options: dict | None, pixel_file: _PixelFile | None
    ) -> dict:
        if pixel_file is None:
            mask_field: dict = {"data": mask}
        else:
            mask_field = {"file": {"name": pixel_file.name, "offset": len(image.data)}}
        return {
            "op": "inpaint",
            "image": LamaClient._image_field(image, pixel_file),
            "mask": {"w": image.width, "h": image.height, **mask_field},
            "options": dict(options or {}),
        }  # fmt: skip

    @staticmethod
    def _image_field(image: ImageData, pixel_file: _PixelFile | None) -> dict:
        """A request's ``image`` map: the pixels inline, or where they lie in the pixel file."""
        where = (
            {"data": image.data} if pixel_file is None
            else {"file": {"name": pixel_file.name, "offset": 0}}
        )  # fmt: skip
        return {"w": image.width, "h": image.height, "format": image.format, **where}

    def _pixel_file_for(self, size: int) -> tuple[_PixelFile | None, bool]:
        """The pixel file for a request of ``size`` bytes (None: inline), and whether it is
        one an earlier request used."""
        if not self.pixel_files or self._pixel_dir is None or size < self.pixel_file_min_bytes:
            return None, False
        current = self._pixel_file
        if current is not None and (
            os.path.dirname(current.path) != self._pixel_dir or current.removed()
        ):
            # Another server (or a restarted one) since the last request, or the server swept
            # the file while this client was idle for an hour.
            self._drop_pixel_file()
        if self._pixel_file is not None:
            return self._pixel_file, True
        try:
            self._pixel_file = _PixelFile(self._pixel_dir)
        except OSError:  # the folder is not visible or not writable from here (a sandbox)
            self.pixel_files = False
            return None, False
        return self._pixel_file, False

    def _drop_pixel_file(self) -> None:
        if self._pixel_file is not None:
            self._pixel_file.close()
            self._pixel_file = None

    def _call(
        self,
        request: dict,
        timeout: float,
        progress: Callable[[float, str], None] | None = None,
        cancel: threading.Event | None = None,
        verified: bool = False,
    ) -> dict:
        """Send ``request`` and wait for its final reply (``verified``: hello already done)."""
        self._final_reply = False
        if cancel is not None and cancel.is_set():
            raise Cancelled()  # cancelled before it started: do not bother the server
        if self.verify_server and self.token and not verified:
            self._check_server_identity(min(timeout, 10.0))
        elif request.get("op") in ("inpaint", "segment") and not self.token:
            raise LamaError(
                "unauthorized",
                f"no token: {default_token_path()} is missing (start lama-server once to "
                "create it) and $LAMA_TOKEN is not set",
            )
        request_id = uuid.uuid4().hex
        message = {"v": PROTOCOL_VERSION, "id": request_id, "token": self.token or "", **request}
        self._transport.send(self._pack(message))
        return self._final_reply_to(request_id, timeout, progress, cancel)

    def _final_reply_to(
        self,
        request_id: str,
        timeout: float,
        progress: Callable[[float, str], None] | None,
        cancel: threading.Event | None,
    ) -> dict:
        """Wait for the request's final reply, passing progress on and sending a cancel when
        ``cancel`` is set; the timeout counts from the last sign of life."""
        deadline = time.monotonic() + timeout
        cancel_sent_at: float | None = None
        while True:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                if cancel_sent_at is None:
                    cancel_sent_at = now
                    self._send_cancel(request_id)
                elif now - cancel_sent_at > self.cancel_grace:
                    self._transport.close()  # stale replies die with the connection
                    raise Cancelled("cancelled (the server did not confirm in time)")
            if now >= deadline:
                self._transport.close()  # a fresh connection next time: no stale replies
                raise RequestTimeout(f"{self.endpoint}: no word from the server in {timeout:g} s")
            # Poll in short slices while a cancel may come, so it is seen promptly.
            wait = deadline - now if cancel is None else min(deadline - now, 0.1)
            reply = self._reply_to(request_id, self._transport.recv(wait))
            if reply is None:
                continue
            if "ok" not in reply:
                # The server is working on it (or it waits in the queue, which the server
                # confirms every 0.5 s): the timeout counts from the last such sign of life.
                deadline = max(deadline, time.monotonic() + timeout)
                if progress is not None and isinstance(reply.get("progress"), (int, float)):
                    progress(float(reply["progress"]), str(reply.get("stage", "")))
                continue
            # The server is done with this request (and its files); a reply without our id
            # (the server could not read the request) proves nothing about that.
            self._final_reply = reply.get("id") == request_id
            return _result(reply, cancelled=cancel_sent_at is not None)

    def _reply_to(self, request_id: str, raw: bytes | None) -> dict | None:
        """The decoded reply if it is one to ``request_id`` (or to no readable id), else None."""
        if raw is None:
            return None
        try:
            reply = self._unpack(raw)
        except Exception as exc:
            raise LamaError("bad_reply", f"unreadable reply from the server: {exc}") from None
        if not isinstance(reply, dict) or reply.get("id") not in (request_id, None):
            return None  # a stale reply to an earlier, abandoned request (or our cancel's ack)
        return reply

    def _server_verified(self) -> bool:
        """Whether this request may hand the server a pixel file: only once the server proved
        it holds our token (checked now, when ``verify_server`` asks for it)."""
        if not (self.verify_server and self.token):
            return False
        self._check_server_identity(min(self.timeout, 10.0))
        return True

    def _check_server_identity(self, timeout: float) -> None:
        """``hello``: the server must prove it knows the token, on this connection, before it
        gets anything else; until then no frame over 64 KiB is read."""
        nonce = os.urandom(NONCE_BYTES)
        reply = self._hello_reply(nonce, timeout)
        self._pixel_dir = None
        self._server_minor = None
        if reply["ok"] is not True:
            error = reply.get("error") if isinstance(reply.get("error"), dict) else {}
            self._transport.close()
            if error.get("code") in ("unknown_op", "bad_request"):
                raise LamaError(
                    "unverified",
                    f"the server at {self.endpoint} cannot prove that it knows your token (a "
                    "lama-server older than protocol 1.1?); update it. Nothing was sent",
                )
            raise LamaError(str(error.get("code", "internal")), str(error.get("message", "")))
        self._check_proof(reply, nonce)
        minor = reply.get("protocol_minor")
        if isinstance(minor, int) and not isinstance(minor, bool):
            self._server_minor = minor
        folder = reply.get("pixel_dir")
        if isinstance(folder, str) and os.path.isabs(folder) and os.path.isdir(folder):
            self._pixel_dir = folder

    def _hello_reply(self, nonce: bytes, timeout: float) -> dict:
        """Send a ``hello`` (version 2: bound to the connection) and wait for its answer."""
        hello_id = uuid.uuid4().hex
        self._transport.send(self._pack({"v": PROTOCOL_VERSION, "id": hello_id, "op": "hello",
                                         "nonce": nonce, "hello": 2}))  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                raw = None
                if remaining > 0:
                    raw = self._transport.recv(remaining, UNVERIFIED_FRAME_BYTES)
            except LamaError:
                self._transport.close()
                raise
            if raw is None:
                self._transport.close()
                raise RequestTimeout(f"{self.endpoint}: no answer to hello in {timeout:g} s")
            try:
                reply = self._unpack(raw)
            except Exception as exc:
                raise LamaError("bad_reply", f"unreadable reply from the server: {exc}") from None
            if isinstance(reply, dict) and reply.get("id") == hello_id and "ok" in reply:
                return reply

    def _check_proof(self, reply: dict, nonce: bytes) -> None:
        """The proof must be HMAC(token) of both nonces and the endpoint this client dialled
        (a CURVE connection is bound to the server's key already: its own endpoint counts)."""
        server_nonce, endpoint = reply.get("server_nonce"), reply.get("endpoint")
        if not isinstance(server_nonce, bytes) or not isinstance(endpoint, str):
            self._transport.close()
            raise LamaError(
                "unverified",
                f"the server at {self.endpoint} speaks protocol 1.2 or older (its hello is not "
                "bound to the connection); update lama-server. Nothing was sent",
            )
        dialled = endpoint if self._transport.encrypted else canonical_endpoint(self.endpoint)
        expected = hello_proof(self.token, nonce, server_nonce, dialled)
        proof = reply.get("proof")
        if not isinstance(proof, (bytes, bytearray)) or not hmac.compare_digest(
            bytes(proof), expected
        ):
            self._transport.close()
            relayed = " (it answered for " + endpoint + ": a relay?)" if endpoint != dialled else ""
            raise LamaError(
                "unauthorized",
                f"the server at {self.endpoint} did not prove that it knows your token{relayed}: "
                f"your token ({default_token_path()} or $LAMA_TOKEN) differs from its token "
                "file, or it is not your lama-server. Nothing was sent to it",
            )

    def _send_cancel(self, target: str) -> None:
        message = {"v": PROTOCOL_VERSION, "id": uuid.uuid4().hex, "token": self.token or "",
                   "op": "cancel", "target": target}  # fmt: skip
        try:
            self._transport.send(self._pack(message))
        except LamaError:
            pass


def _result(reply: dict, cancelled: bool) -> dict:
    """A final reply: returned if it is a success, raised as a :class:`LamaError` if not."""
    if reply["ok"] is True:
        if cancelled:
            raise Cancelled()  # finished just as the user cancelled: drop the result
        return reply
    error = reply.get("error")
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code", "internal"))
    text = str(error.get("message", "server error"))
    if code == "cancelled":
        raise Cancelled(text)
    if code == "unavailable":
        raise ClusterUnavailable(text)
    raise LamaError(code, text)
