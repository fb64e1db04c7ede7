"""lama-server end to end over real ZeroMQ on loopback, with the tiny fixture model."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid

import msgpack
import numpy as np
import pytest
import zmq

from lama_client.client import (
    Cancelled,
    ImageData,
    LamaClient,
    LamaError,
    RequestTimeout,
    ServerUnavailable,
)
from lama_model.pipeline import InpaintOptions, inpaint
from lama_model.weights.checkpoint import load_model
from lama_server.wire.pixel_formats import FORMATS, array_to_wire, wire_to_array

BOTH = pytest.mark.parametrize("use_pyzmq", [False, True], ids=["stdlib", "pyzmq"])


def raw_call(endpoint: str, payload: bytes, timeout: float = 10.0) -> dict:
    """Send raw bytes through a DEALER and return the final reply."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(payload)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sock.poll(int((end - time.monotonic()) * 1000) + 1):
                reply = msgpack.unpackb(sock.recv(), raw=False)
                if "ok" in reply:
                    return reply
        raise AssertionError("no reply")
    finally:
        sock.close()


def request(server, **fields) -> bytes:
    base = {"v": 1, "id": uuid.uuid4().hex, "token": server.token, "op": "ping"}
    base.update(fields)
    return msgpack.packb({k: v for k, v in base.items() if v is not ...}, use_bin_type=True)


def sample(w=48, h=40, seed=0):
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[10:22, 12:30] = 255
    mask[22:26, 12:30] = 90  # soft edge
    return rgba, mask


@BOTH
def test_ping_and_info(running_server, use_pyzmq):
    with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=use_pyzmq) as c:
        assert c.ping()["pong"] is True
        info = c.info()
    assert info["model"] == "tiny-lama" and info["device"] == "cpu"
    # `auto` measures: fp32, or bf16 on a CPU where it is faster; the path says why.
    assert info["backend"] == "torch" and info["precision"] in ("fp32", "bf16")
    assert re.fullmatch(rf"{info['precision']}\+fused \(.+\)", info["path"]), info["path"]
    assert info["limits"]["queue"] >= 1 and info["limits"]["max_pixels"] > 0
    assert "BGRA16" in info["formats"]


@BOTH
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_inpaint_equals_local_call_in_every_format(running_server, served_tiny, use_pyzmq, fmt):
    rgba, mask = sample()
    spec = FORMATS[fmt]
    canonical = {"RGBA": 4, "RGB": 3, "Y": 1, "YA": 2}[{"BGRA": "RGBA"}.get(spec.order, spec.order)]
    pixels = rgba[:, :, :canonical] if canonical > 1 else rgba[:, :, :1]
    if spec.dtype.itemsize == 2:
        pixels = pixels.astype(np.uint16) * 257
    elif spec.dtype.kind == "f":
        pixels = pixels.astype(np.float32) / 255
    data = array_to_wire(fmt, pixels)
    h, w = mask.shape
    options = {"mask_grow": 2, "feather": 3}
    with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=use_pyzmq) as c:
        reply = c.inpaint(ImageData(w, h, fmt, data), mask.tobytes(), options)
    assert (reply.width, reply.height, reply.format) == (w, h, fmt)
    expected = inpaint(served_tiny, pixels, mask, InpaintOptions(mask_grow=2, feather=3)).image
    assert reply.data == array_to_wire(fmt, expected)


def test_layer_output_holds_only_the_filled_pixels(running_server, served_tiny):
    rgba, mask = sample()
    h, w = mask.shape
    with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=False) as c:
        reply = c.inpaint(ImageData(w, h, "BGRA8", array_to_wire("BGRA8", rgba)), mask.tobytes(),
                          {"output": "layer", "mask_grow": 2, "feather": 2})  # fmt: skip
    layer = wire_to_array("BGRA8", w, h, reply.data)
    result = inpaint(served_tiny, rgba, mask, InpaintOptions(mask_grow=2, feather=2))
    inside = result.alpha == 1
    outside = result.alpha == 0
    assert (layer[outside] == 0).all()
    np.testing.assert_array_equal(layer[inside][:, :3], result.image[inside][:, :3])
    np.testing.assert_array_equal(layer[inside][:, 3], rgba[inside][:, 3])
    ring = ~inside & ~outside
    expected_alpha = np.rint(result.alpha[ring] * rgba[ring][:, 3]).astype(np.uint8)
    np.testing.assert_array_equal(layer[ring][:, 3], expected_alpha)


def test_progress_messages_arrive(running_server):
    rgba, mask = sample()
    seen = []
    with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=False) as c:
        c.inpaint(ImageData(48, 40, "RGBA8", rgba.tobytes()), mask.tobytes(),
                  progress=lambda f, s: seen.append((f, s)))  # fmt: skip
    stages = [s for _, s in seen]
    assert stages[0] == "queued" and "inpaint" in stages and seen[-1][0] == 1.0


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        ({"token": "wrong"}, "unauthorized", "token"),
        ({"token": ...}, "unauthorized", "token"),
        ({"v": 2}, "unsupported_version", "version 2"),
        ({"v": ...}, "unsupported_version", "version None"),
        ({"op": "explode"}, "unknown_op", "unknown op"),
        ({"op": 5}, "bad_request", "'op' must be a string"),
        ({"id": 12}, "bad_request", "'id'"),
        ({"id": "x" * 65}, "bad_request", "'id'"),
        ({"op": "cancel"}, "bad_request", "'target'"),
        ({"op": "inpaint"}, "bad_request", "'image' must be a map"),
    ],
)
def test_bad_envelopes_get_error_replies(running_server, fields, code, text):
    reply = raw_call(running_server.endpoint, request(running_server, **fields))
    assert reply["ok"] is False and reply["error"]["code"] == code
    assert text in reply["error"]["message"]


def _inpaint_fields(w=8, h=8, fmt="RGBA8", data=None, mask=None, options=None):
    bpp = FORMATS[fmt].bytes_per_pixel if fmt in FORMATS else 4
    return {
        "op": "inpaint",
        "image": {"w": w, "h": h, "format": fmt, "data": data if data is not None else b"\0" * (w * h * bpp)},
        "mask": {"w": w, "h": h, "data": mask if mask is not None else b"\xff" * (w * h)},
        "options": options or {},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        (_inpaint_fields(data=b"\0" * 10), "bad_request", "needs 256"),
        (_inpaint_fields(mask=b"\0" * 10), "bad_request", "mask.data has 10 bytes"),
        (_inpaint_fields(fmt="CMYK8"), "bad_request", "unknown pixel format"),
        (_inpaint_fields(w=0), "bad_request", "must be positive"),
        (_inpaint_fields(w=-3), "bad_request", "must be positive"),
        ({**_inpaint_fields(), "image": {"w": 100000, "h": 100000, "format": "RGBA8", "data": b""}},
         "too_large", "exceeds"),
        ({**_inpaint_fields(), "image": {"w": "8", "h": 8, "format": "RGBA8", "data": b""}},
         "bad_request", "'image.w' must be a integer"),
        ({**_inpaint_fields(), "image": {"w": True, "h": 8, "format": "RGBA8", "data": b""}},
         "bad_request", "'image.w'"),
        ({**_inpaint_fields(), "image": {"w": 8, "h": 8, "format": "RGBA8", "data": "str"}},
         "bad_request", "'image.data' must be a binary"),
        ({**_inpaint_fields(), "mask": {"w": 9, "h": 8, "data": b""}}, "bad_request", "mask size"),
        (_inpaint_fields(options={"mask_grow": float("nan")}), "bad_request", "options.mask_grow"),
        (_inpaint_fields(options={"feather": float("inf")}), "bad_request", "options.feather"),
        (_inpaint_fields(options={"feather": 1000}), "bad_request", "options.feather"),
        (_inpaint_fields(options={"strategy": "magic"}), "bad_request", "options.strategy"),
        (_inpaint_fields(options={"colour": 1}), "bad_request", "unknown options"),
        (_inpaint_fields(options={"resize_limit": 255}), "bad_request", "options.resize_limit must be an integer in 256..4096"),
        (_inpaint_fields(options={"resize_limit": 4097}), "bad_request", "options.resize_limit"),
        (_inpaint_fields(options={"resize_limit": -1}), "bad_request", "options.resize_limit"),
        (_inpaint_fields(options={"resize_limit": "768"}), "bad_request", "options.resize_limit"),
        (_inpaint_fields(options={"resize_limit": True}), "bad_request", "options.resize_limit"),
        (_inpaint_fields(options={"resize_limit": 768.5}), "bad_request", "options.resize_limit"),
        (_inpaint_fields(options={"resize_limit": float("nan")}), "bad_request", "options.resize_limit"),
        (_inpaint_fields(options={"resize_limit": None}), "bad_request", "options.resize_limit"),
        (_inpaint_fields(fmt="RGB8", options={"output": "layer"}), "bad_request", "needs a format with alpha"),
        ({**_inpaint_fields(), "options": []}, "bad_request", "'options' must be a map"),
    ],
)  # fmt: skip
def test_bad_inpaint_requests_get_error_replies(running_server, fields, code, text):
    reply = raw_call(running_server.endpoint, request(running_server, **fields))
    assert reply["ok"] is False and reply["error"]["code"] == code, reply
    assert text in reply["error"]["message"]


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1garbage", b"\x93\x01\x02\x03", msgpack.packb("a string"), b"\xff" * 100],
)
def test_garbage_gets_bad_request_and_server_lives(running_server, payload):
    reply = raw_call(running_server.endpoint, payload)
    assert reply["error"]["code"] in ("bad_request", "unsupported_version")
    assert raw_call(running_server.endpoint, request(running_server))["pong"] is True


def test_oversized_message_is_dropped_before_allocation(server_factory):
    server = server_factory("--max-pixels", "4096", "--no-warmup")
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    sock.send(b"\0" * (20 * 4096 + 70000))  # over MAXMSGSIZE: libzmq drops the connection
    sock.close()
    assert raw_call(server.endpoint, request(server))["pong"] is True


def test_token_file_is_private(running_server):
    mode = stat.S_IMODE(os.stat(running_server.token_file).st_mode)
    assert mode == 0o600 and len(running_server.token) >= 32


def test_client_reads_token_from_env_file(running_server, monkeypatch):
    monkeypatch.setenv("LAMA_TOKEN_FILE", str(running_server.token_file))
    monkeypatch.delenv("LAMA_TOKEN", raising=False)
    with LamaClient(running_server.endpoint, use_pyzmq=False) as c:
        assert c.ping()["pong"]


@BOTH
def test_server_down_is_a_clear_error_within_two_seconds(use_pyzmq):
    with socket_port() as port:
        pass  # a port nobody listens on
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="lama-server"):
        LamaClient(f"tcp://127.0.0.1:{port}", "t", use_pyzmq=use_pyzmq).ping()
    assert time.monotonic() - start < 2.5


class socket_port:
    def __enter__(self):
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *a):
        self.s.close()


def test_client_reconnects_after_server_restart(server_factory, tmp_path):
    first = server_factory("--no-warmup")
    client = LamaClient(first.endpoint, first.token, use_pyzmq=False)
    assert client.ping()["pong"]
    port = first.port
    assert first.stop() == 0
    second = server_factory("--no-warmup", "--token-file", str(first.token_file),
                            "--listen", f"tcp://127.0.0.1:{port}")  # fmt: skip
    assert second.port == port
    assert client.ping()["pong"]  # same client object, new server process
    client.close()


def test_full_queue_answers_busy_at_once(server_factory):
    server = server_factory("--queue", "1", "--no-warmup")
    size = 1024  # about a second per request with the tiny model: the queue fills for sure
    rgba = np.zeros((size, size, 4), np.uint8)
    mask = np.full((size, size), 255, np.uint8)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    ids = [uuid.uuid4().hex for _ in range(5)]
    fields = _inpaint_fields(
        size, size, "RGBA8", rgba.tobytes(), mask.tobytes(), {"strategy": "original"}
    )
    sock.send(request(server, id=ids[0], **fields))
    while True:  # wait until the first request is running, so the queue of 1 is empty
        assert sock.poll(30000)
        if msgpack.unpackb(sock.recv(), raw=False).get("stage") == "inpaint":
            break
    for rid in ids[1:]:
        sock.send(request(server, id=rid, **fields))
    finals, busy_at = {}, {}
    sent = time.monotonic()
    end = sent + 90
    while len(finals) < len(ids) and time.monotonic() < end:
        if sock.poll(1000):
            reply = msgpack.unpackb(sock.recv(), raw=False)
            if "ok" in reply:
                finals[reply["id"]] = reply
                if not reply["ok"] and reply["error"]["code"] == "busy":
                    busy_at[reply["id"]] = time.monotonic() - sent
    sock.close()
    codes = [finals[i]["ok"] or finals[i]["error"]["code"] for i in ids]
    assert codes[:2] == [True, True]  # one ran at once, one waited in the queue of 1
    assert codes[2:] == ["busy"] * 3
    assert max(busy_at.values()) < 0.5  # refused at once, not after waiting


def test_cancel_a_running_request(server_factory):
    server = server_factory("--no-warmup")
    rgba = np.zeros((1024, 1024, 4), np.uint8)
    mask = np.full((1024, 1024), 255, np.uint8)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with LamaClient(server.endpoint, server.token, use_pyzmq=False) as c:
        with pytest.raises(Cancelled):
            c.inpaint(ImageData(1024, 1024, "RGBA8", rgba.tobytes()), mask.tobytes(),
                      {"strategy": "crop"}, cancel=cancel)  # fmt: skip
        assert c.ping()["pong"]


def test_reply_timeout_is_reported(running_server):
    # The timeout bounds the silence between progress messages: the forward of a 1024² window
    # (about a second with the tiny model) is far longer than 0.05 s.
    rgba = np.zeros((1024, 1024, 4), np.uint8)
    mask = np.full((1024, 1024), 255, np.uint8)
    with LamaClient(
        running_server.endpoint, running_server.token, timeout=0.05, use_pyzmq=False
    ) as c:
        with pytest.raises(RequestTimeout):
            c.inpaint(ImageData(1024, 1024, "RGBA8", rgba.tobytes()), mask.tobytes(),
                      {"strategy": "original"})  # fmt: skip


def wait_for_log(server, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{server.log()}"
        time.sleep(0.02)


def _start_a_long_request(server) -> tuple[threading.Thread, dict]:
    """A request of a few seconds of work, running on ``server`` when this returns; the
    thread leaves its ``reply`` or ``error`` in the dict."""
    size = 1024
    rgba = np.zeros((size, size, 4), np.uint8)
    mask = np.full((size, size), 255, np.uint8)
    result: dict = {}
    started = threading.Event()

    def run():
        with LamaClient(server.endpoint, server.token, use_pyzmq=False) as c:
            try:
                result["reply"] = c.inpaint(ImageData(size, size, "RGBA8", rgba.tobytes()),
                                            mask.tobytes(), {"strategy": "original"},
                                            progress=on_progress)  # fmt: skip
            except LamaError as exc:
                result["error"] = exc

    def on_progress(_fraction: float, stage: str) -> None:
        if stage != "queued":  # a worker has it: a stop now lets it finish
            started.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(120), "the request never started"
    return thread, result


def test_sigterm_finishes_the_request_in_flight_then_exits_0(server_factory):
    """Each step waits for the one before (no fixed sleeps), so load cannot reorder them."""
    server = server_factory("--no-warmup", "--precision", "fp32")
    thread, result = _start_a_long_request(server)
    server.proc.send_signal(signal.SIGTERM)
    wait_for_log(server, "received SIGTERM")
    late = raw_call(server.endpoint, request(server, **_inpaint_fields()), timeout=60)
    thread.join(180)
    assert server.proc.wait(120) == 0
    assert "reply" in result, result.get("error")
    assert late["error"]["code"] == "shutting_down"


@BOTH
def test_ping_while_draining_says_the_server_is_shutting_down(server_factory, use_pyzmq):
    server = server_factory("--no-warmup", "--precision", "fp32")
    thread, result = _start_a_long_request(server)
    server.proc.send_signal(signal.SIGTERM)
    wait_for_log(server, "stopping: finishing the request in flight")
    with LamaClient(server.endpoint, server.token, use_pyzmq=use_pyzmq) as c:
        with pytest.raises(LamaError) as info:
            c.ping()
    assert info.value.code == "shutting_down" and "shutting down" in info.value.message
    thread.join(180)
    assert server.proc.wait(120) == 0 and "reply" in result, result.get("error")


def test_a_second_server_on_a_busy_port_fails_before_loading_the_model(
    running_server, tmp_path, tiny_model_dir
):
    """At once, and saying what probably holds the port and how to check."""
    cmd = [sys.executable, "-m", "lama_server.commands.serve", "--model", str(tiny_model_dir),
           "--device", "cpu", "--listen", running_server.endpoint,
           "--token-file", str(tmp_path / "token")]  # fmt: skip
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    error = second.stderr.strip().splitlines()[-1]
    assert error.startswith(f"lama-server: error: cannot serve on {running_server.endpoint}")
    assert "a lama-server is probably running there already" in error
    assert f"lama-server ping {running_server.endpoint}" in error
    assert "loading model" not in second.stderr and "ready on" not in second.stdout
    with LamaClient(running_server.endpoint, running_server.token) as c:
        assert c.ping()["pong"]  # the first server is untouched


def test_non_loopback_listen_needs_allow_remote(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "lama_server.commands.serve", "--model", str(tiny_model_dir), "--listen",
         "tcp://0.0.0.0:5999", "--token-file", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "--allow-remote" in proc.stderr


def test_bad_model_fails_at_start_with_a_message(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "lama_server.commands.serve", "--model", str(tmp_path / "missing"),
         "--token-file", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 78 and "not a known model" in proc.stderr


def test_ping_and_info_commands(running_server):
    import subprocess
    import sys

    env = dict(os.environ, LAMA_TOKEN_FILE=str(running_server.token_file))
    ping = subprocess.run([sys.executable, "-m", "lama_server.commands.serve", "ping", running_server.endpoint],
                          capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
    assert ping.returncode == 0 and "pong" in ping.stdout
    info = subprocess.run([sys.executable, "-m", "lama_server.commands.serve", "info", running_server.endpoint],
                          capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
    assert info.returncode == 0 and '"model": "tiny-lama"' in info.stdout
    # --token-file instead of the environment (an explicit file wins over $LAMA_TOKEN).
    bare = {k: v for k, v in os.environ.items() if k not in ("LAMA_TOKEN_FILE", "LAMA_TOKEN")}
    flag = ["--token-file", str(running_server.token_file)]
    for command in ("ping", "info"):
        proc = subprocess.run([sys.executable, "-m", "lama_server.commands.serve", command,
                               running_server.endpoint, *flag], capture_output=True, text=True,
                              env=dict(bare, LAMA_TOKEN="wrong"), timeout=30)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    missing = subprocess.run([sys.executable, "-m", "lama_server.commands.serve", "ping",
                              running_server.endpoint, "--token-file", "/nonexistent/token"],
                             capture_output=True, text=True, env=bare, timeout=30)  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    with socket_port() as port:
        pass
    down = subprocess.run([sys.executable, "-m", "lama_server.commands.serve", "ping", f"tcp://127.0.0.1:{port}"],
                          capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
    assert down.returncode == 1 and "Start it with: lama-server" in down.stderr


def test_ipc_endpoint(server_factory, tmp_path):
    path = tmp_path / "lama.sock"
    server_factory("--no-warmup", "--listen", f"ipc://{path}")
    # The ready line prints the bound endpoint; both clients reach it.
    token = (tmp_path / "s0" / "token").read_text().strip()
    for use_pyzmq in (False, True):
        with LamaClient(f"ipc://{path}", token, use_pyzmq=use_pyzmq) as c:
            assert c.ping()["pong"]


def test_lama_inpaint_through_server_is_bit_identical(
    running_server, served_precision, golden_dir, tmp_path, monkeypatch
):
    from lama_server.commands.inpaint import main

    monkeypatch.setenv("LAMA_TOKEN_FILE", str(running_server.token_file))
    args = [str(golden_dir / "case-a/image.png"), str(golden_dir / "case-a/mask.png")]
    assert (
        main([*args, "-o", str(tmp_path / "remote.png"), "--server", running_server.endpoint]) == 0
    )
    assert main([*args, "-o", str(tmp_path / "local.png"), "--model", str(golden_dir / "tiny-lama"),
                 "--device", "cpu", "--precision", served_precision]) == 0  # fmt: skip
    assert (tmp_path / "remote.png").read_bytes() == (tmp_path / "local.png").read_bytes()


def test_remote_serving_uses_curve_encryption(server_factory, tmp_path):
    server = server_factory("--no-warmup", "--allow-remote", "--listen", "tcp://0.0.0.0:*")
    endpoint = f"tcp://127.0.0.1:{server.port}"
    key = (server.token_file.parent / "server.key").read_bytes().strip()
    secret = server.token_file.parent / "server.key_secret"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    with LamaClient(endpoint, server.token, use_pyzmq=True, server_key=key) as c:
        assert c.ping()["pong"]
    # Without the key nobody gets through: a plain ZeroMQ client never completes the handshake,
    # and the stdlib client (NULL only) says what the server asks for.
    with pytest.raises(ServerUnavailable):
        LamaClient(endpoint, server.token, use_pyzmq=True, connect_timeout=1.0).ping()
    with pytest.raises(ServerUnavailable, match="CURVE"):
        LamaClient(endpoint, server.token, use_pyzmq=False).ping()


def test_onnxruntime_backend_serves_the_exported_model(
    server_factory, tmp_path, tiny_model_dir, monkeypatch
):
    """--backend onnxruntime exports once into the cache, then serves it; replies match torch."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LAMA_CACHE_DIR", str(cache))  # inherited by the server subprocess
    server = server_factory("--backend", "onnxruntime")
    exported = list((cache / "onnx").glob("tiny-lama-*.onnx"))
    assert len(exported) == 1 and not list((cache / "onnx").glob("*.partial"))
    rgba, mask = sample(w=64, h=56)
    h, w = mask.shape
    with LamaClient(server.endpoint, server.token) as c:
        info = c.info()
        reply = c.inpaint(ImageData(w, h, "RGBA8", rgba.tobytes()), mask.tobytes(), {})
    assert (info["backend"], info["path"]) == ("onnxruntime", "onnxruntime:cpu")
    got = np.frombuffer(reply.data, np.uint8).reshape(h, w, 4).astype(int)
    expected = inpaint(load_model(tiny_model_dir), rgba, mask, InpaintOptions()).image
    assert np.abs(got - expected.astype(int)).max() <= 1


def test_onnx_file_without_onnxruntime_backend_is_refused(tmp_path):
    import subprocess
    import sys

    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really")
    proc = subprocess.run(
        [sys.executable, "-m", "lama_server.commands.serve", "--model", str(model), "--device", "cpu",
         "--token-file", str(tmp_path / "token")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 78
    assert "--backend onnxruntime" in proc.stderr
