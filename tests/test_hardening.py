"""Defects of the adversarial review (issue 11): each test reproduces one and proves it fixed."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import shutil
import socket
import stat
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
import zmq

from lama_client import client, wire
from lama_client.client import ImageData, LamaClient, LamaError
from lama_model.weights import checkpoint
from lama_model.weights.checkpoint import CheckpointError, load_model
from lama_server.wire import protocol
from lama_server.wire.protocol import Limits, ProtocolError

# --------------------------------------------------------------------------------------------
# Model files that run code (TorchScript)


class _MaliciousModule(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` writes into a file when it is loaded."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.hits = 0

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image

    @torch.jit.export
    def __getstate__(self) -> list[str]:
        return [self.target]

    @torch.jit.export
    def __setstate__(self, state: list[str]) -> None:
        self.target = state[0]
        self.training = False
        # A shared file mapping: filling it writes the file on disk.
        written = torch.from_file(self.target, True, 16, dtype=torch.uint8).fill_(33)
        self.hits = int(written.sum())


@pytest.fixture
def malicious_archive(tmp_path: Path) -> tuple[Path, Path]:
    """(TorchScript archive, the file its code overwrites when loaded: 16 zero bytes now)."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(bytes(16))
    archive = tmp_path / "evil.pt"
    torch.jit.script(_MaliciousModule(str(victim))).save(str(archive))
    assert victim.read_bytes() == bytes(16)
    return archive, victim


def test_torchscript_is_refused_without_opt_in_and_runs_nothing(malicious_archive):
    archive, victim = malicious_archive
    with pytest.raises(CheckpointError, match="code that runs.*--allow-torchscript"):
        load_model(archive)
    assert victim.read_bytes() == bytes(16)


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_torchscript_behind_a_weights_name_is_refused_even_with_opt_in(malicious_archive, suffix):
    archive, victim = malicious_archive
    disguised = archive.with_suffix(suffix)
    shutil.copy(archive, disguised)
    for allow in (False, True):
        with pytest.raises(CheckpointError, match="TorchScript archive.*code"):
            load_model(disguised, allow_torchscript=allow)
    assert victim.read_bytes() == bytes(16)


def test_torchscript_in_a_model_folder_needs_the_opt_in_too(malicious_archive, tmp_path):
    archive, victim = malicious_archive
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(archive, folder / "model.pt")
    with pytest.raises(CheckpointError, match="--allow-torchscript"):
        load_model(folder)
    assert victim.read_bytes() == bytes(16)


def test_opt_in_loads_torchscript_which_does_run_its_code(malicious_archive):
    """The archive above really is malicious: with the opt-in its code runs."""
    archive, victim = malicious_archive
    load_model(archive, allow_torchscript=True)
    assert victim.read_bytes() == b"!" * 16


def test_pinned_torchscript_release_loads_without_opt_in(golden_dir, monkeypatch):
    from lama_model.weights import downloads as weights

    scripted = golden_dir / "tiny-lama.pt"
    md5 = hashlib.md5(scripted.read_bytes()).hexdigest()
    pinned = weights.KnownModel("big-lama-jit", "file:///nowhere", "big-lama.pt", f"md5:{md5}", "")
    monkeypatch.setitem(weights.KNOWN_MODELS, "big-lama-jit", pinned)
    assert load_model(scripted).scripted
    other = weights.KnownModel(
        "big-lama-jit", "file:///nowhere", "big-lama.pt", "md5:" + "0" * 32, ""
    )
    monkeypatch.setitem(weights.KNOWN_MODELS, "big-lama-jit", other)
    with pytest.raises(CheckpointError, match="--allow-torchscript"):
        load_model(scripted)


@pytest.mark.parametrize("command", ["lama-server", "lama-inpaint"])
def test_commands_refuse_torchscript_with_one_line(malicious_archive, tmp_path, capsys, command):
    archive, victim = malicious_archive
    if command == "lama-server":
        from lama_server.commands.serve import main

        argv = ["--model", str(archive), "--device", "cpu", "--token-file", str(tmp_path / "t")]
    else:
        from lama_server.commands.inpaint import main

        image = tmp_path / "i.png"
        from PIL import Image

        Image.new("RGB", (16, 16)).save(image)
        argv = [str(image), str(image), "-o", str(tmp_path / "o.png"), "--model", str(archive),
                "--device", "cpu"]  # fmt: skip
    assert main(argv) == (78 if command == "lama-server" else 1)  # 78: configuration error
    err = capsys.readouterr().err.strip()
    assert "--allow-torchscript" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert victim.read_bytes() == bytes(16)


# --------------------------------------------------------------------------------------------
# Checkpoints with absurd shapes


def _tiny_plain_state(tiny_model_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(tiny_model_dir / "models/best.ckpt", weights_only=True)
    return {
        k[len("generator.") :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("generator.")
    }


def test_one_dimensional_first_conv_is_a_clear_error(tmp_path, tiny_model_dir):
    state = _tiny_plain_state(tiny_model_dir)
    state["model.1.ffc.convl2l.weight"] = torch.zeros(16)
    torch.save(state, tmp_path / "flat.pth")
    with pytest.raises(CheckpointError, match="4-D"):
        load_model(tmp_path / "flat.pth")


@pytest.mark.parametrize(("ngf", "blocks"), [(100_000, 2), (128, 40)])
def test_huge_shapes_are_refused_before_a_generator_is_built(tmp_path, monkeypatch, ngf, blocks):
    # A 1-element storage viewed as a huge tensor: the file stays tiny, the shapes do not.
    huge = {"model.1.ffc.convl2l.weight": torch.zeros(1).expand(ngf, 4, 7, 7)}
    for block in range(5, 5 + blocks):
        huge[f"model.{block}.conv1.ffc.convl2l.weight"] = torch.zeros(1).expand(8, 8, 3, 3)
    path = tmp_path / "huge.pth"
    torch.save(huge, path)
    assert path.stat().st_size < 16384

    def no_build(*args, **kwargs):
        raise AssertionError("a generator was built from absurd shapes")

    monkeypatch.setattr(checkpoint, "FFCResNetGenerator", no_build)
    with pytest.raises(CheckpointError, match="outside sane limits"):
        load_model(path)


# --------------------------------------------------------------------------------------------
# The token before the pixels; zero-copy decoding


def _big_request(token: str, tail: bytes = b"", token_first: bool = True) -> bytes:
    """A 2 MiB inpaint request; ``tail`` replaces its pixel section's end (garbage there)."""
    w = h = 512
    message = {"v": 1, "id": "big", "op": "inpaint"}
    if token_first:
        message["token"] = token
    message["image"] = {"w": w, "h": h, "format": "RGBA8", "data": bytes(w * h * 4)}
    message["mask"] = {"w": w, "h": h, "data": bytes(w * h)}
    if not token_first:
        message["token"] = token
    packed = msgpack.packb(message, use_bin_type=True)
    return packed[: len(packed) - len(tail)] + tail if tail else packed


def _allow(expected: str):
    return lambda token: token == expected


def test_wrong_token_is_refused_before_the_pixel_data_is_parsed():
    # Everything after the envelope is garbage: parsing it first would say bad_request.
    frame = _big_request("wrong", tail=b"\xc1" * 1_000_000)
    with pytest.raises(ProtocolError) as info:
        protocol.decode(frame, Limits(), _allow("right"))
    assert info.value.code == "unauthorized" and info.value.request_id == "big"


def test_a_large_message_must_carry_its_token_before_the_pixels():
    frame = _big_request("right", token_first=False)
    with pytest.raises(ProtocolError) as info:
        protocol.decode(frame, Limits(), _allow("right"))
    assert info.value.code == "unauthorized" and "before any pixel data" in info.value.message
    assert protocol.decode(_big_request("right"), Limits(), _allow("right")).width == 512


def test_token_is_checked_before_the_op_fields():
    small = msgpack.packb({"v": 1, "id": "x", "op": "inpaint", "token": "wrong", "image": 5})
    with pytest.raises(ProtocolError) as info:
        protocol.decode(small, Limits(), _allow("right"))
    assert info.value.code == "unauthorized"


def test_pixel_fields_are_views_of_the_received_frame_not_copies():
    frame = bytearray(_big_request("right"))
    request = protocol.decode(frame, Limits(), _allow("right"))
    assert isinstance(request.image_data, memoryview) and request.image_data.obj is frame
    image = np.frombuffer(request.image_data, np.uint8)
    assert np.shares_memory(image, np.frombuffer(frame, np.uint8))


def _raw_dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _final_reply(sock: zmq.Socket, timeout: float = 20.0) -> tuple[dict, int]:
    """The next final reply and the number of frames its message had."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sock.poll(100):
            frames = sock.recv_multipart()
            reply = msgpack.unpackb(frames[-1], raw=False)
            if "ok" in reply:
                return reply, len(frames)
    raise AssertionError("no reply")


def test_server_refuses_a_large_unauthenticated_message(running_server):
    sock = _raw_dealer(running_server.endpoint)
    try:
        sock.send(_big_request("wrong", tail=b"\xc1" * 1_000_000))
        reply, _ = _final_reply(sock)
    finally:
        sock.close()
    assert reply["error"]["code"] == "unauthorized"
    with LamaClient(running_server.endpoint, running_server.token) as c:
        assert c.ping()["pong"]


# --------------------------------------------------------------------------------------------
# One frame per message


def test_multi_frame_requests_are_refused_and_nothing_is_echoed(running_server):
    ping = msgpack.packb({"v": 1, "id": "m", "op": "ping", "token": running_server.token})
    sock = _raw_dealer(running_server.endpoint)
    try:
        sock.send_multipart([ping, b"extra frame"])
        reply, frames = _final_reply(sock)
    finally:
        sock.close()
    assert frames == 1
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert "one frame" in reply["error"]["message"]


# --------------------------------------------------------------------------------------------
# The server proves it knows the token


def test_server_answers_hello_with_the_hmac_of_the_nonce(running_server):
    nonce = bytes(range(32))
    hello = msgpack.packb({"v": 1, "id": "h", "op": "hello", "nonce": nonce}, use_bin_type=True)
    sock = _raw_dealer(running_server.endpoint)
    try:
        sock.send(hello)
        reply, _ = _final_reply(sock)
    finally:
        sock.close()
    expected = hmac.new(running_server.token.encode(), wire.HELLO_CONTEXT + nonce, "sha256")
    assert reply["ok"] is True and reply["proof"] == expected.digest()
    assert reply["protocol"] == 1 and reply["protocol_minor"] >= 1


# --------------------------------------------------------------------------------------------
# Work for clients that left


def test_jobs_of_a_client_that_disconnects_are_dropped(server_factory):
    server = server_factory("--no-warmup", "--queue", "8")
    w = h = 768
    sock = _raw_dealer(server.endpoint)
    ids = [f"gone-{i}" for i in range(5)]
    try:
        for rid in ids:
            sock.send(msgpack.packb({
                "v": 1, "id": rid, "op": "inpaint", "token": server.token,
                "image": {"w": w, "h": h, "format": "RGBA8", "data": bytes(w * h * 4)},
                "mask": {"w": w, "h": h, "data": b"\xff" * (w * h)},
                "options": {"strategy": "original"},
            }, use_bin_type=True))  # fmt: skip
        queued = set()
        end = time.monotonic() + 20
        while len(queued) < len(ids) and time.monotonic() < end:
            if sock.poll(100):
                reply = msgpack.unpackb(sock.recv(), raw=False)
                if reply.get("stage") == "queued":
                    queued.add(reply["id"])
        assert queued == set(ids)
    finally:
        sock.close()  # the client goes away with 5 jobs accepted
    with LamaClient(server.endpoint, server.token) as c:
        out = c.inpaint(ImageData(8, 8, "GRAY8", bytes(64)), b"\xff" * 64)
    assert out.width == 8
    log = server.log()
    found = re.search(r"a client disconnected: dropped (\d+) queued request", log)
    assert found and int(found.group(1)) >= 3, log
    finished = [rid for rid in ids if re.search(rf"inpaint {rid} {w}x{h}", log)]
    assert len(finished) <= 1, log


# --------------------------------------------------------------------------------------------
# ipc:// endpoints cannot be hijacked


def _serve_once(tmp_path: Path, tiny_model_dir: Path, endpoint: str, timeout: float = 60):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "lama_server.commands.serve", "--model", str(tiny_model_dir), "--device",
           "cpu", "--no-warmup", "--listen", endpoint, "--token-file", str(tmp_path / "t2")]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_second_server_refuses_a_live_ipc_socket(server_factory, tmp_path, tiny_model_dir):
    path = tmp_path / "run" / "lama.sock"
    first = server_factory("--no-warmup", "--listen", f"ipc://{path}")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = _serve_once(tmp_path, tiny_model_dir, f"ipc://{path}")
    assert second.returncode == 1 and "another server is listening" in second.stderr
    with LamaClient(f"ipc://{path}", first.token) as c:
        assert c.ping()["pong"]


def test_a_stale_ipc_socket_file_is_replaced(server_factory, tmp_path):
    path = tmp_path / "lama.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a crashed server leaves
    server = server_factory("--no-warmup", "--listen", f"ipc://{path}")
    with LamaClient(f"ipc://{path}", server.token) as c:
        assert c.ping()["pong"]


# --------------------------------------------------------------------------------------------
# Small ones


def test_ipv6_loopback_endpoint_binds(server_factory):
    server = server_factory("--no-warmup", "--listen", "tcp://[::1]:*")
    assert server.endpoint.startswith("tcp://[::1]:")
    for use_pyzmq in (False, True):
        with LamaClient(server.endpoint, server.token, use_pyzmq=use_pyzmq) as c:
            assert c.ping()["pong"]


def test_curve_secret_written_into_an_existing_readable_file_becomes_private(tmp_path):
    from lama_server.daemon.auth import load_or_create_curve_keys

    secret = tmp_path / "server.key_secret"
    secret.write_bytes(b"old\n")
    secret.chmod(0o644)
    load_or_create_curve_keys(tmp_path)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_world_readable_token_file_is_fixed_and_logged(tmp_path, caplog):
    from lama_server.daemon.auth import load_or_create_token

    path = tmp_path / "token"
    path.write_text("secret-token\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="lama_server"):
        assert load_or_create_token(path)[0] == "secret-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "could read it" in caplog.text


def test_token_file_that_is_not_utf8_is_a_one_line_error(tmp_path, tiny_model_dir, capsys):
    from lama_server.commands.serve import main

    bad = tmp_path / "token"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    argv = ["--model", str(tiny_model_dir), "--device", "cpu", "--token-file", str(bad)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "not UTF-8" in err and len(err.splitlines()) == 1
    with pytest.raises(LamaError, match="not UTF-8"):
        client.read_token(str(bad))


def test_client_frame_limit_is_the_protocols_message_limit():
    assert wire.MAX_REPLY_BYTES == Limits().max_message_bytes


def test_ping_without_server_key_says_the_key_is_missing(server_factory, capsys):
    from lama_server.commands.serve import main

    server = server_factory("--no-warmup", "--allow-remote", "--listen", "tcp://0.0.0.0:*")
    assert main(["ping", f"tcp://127.0.0.1:{server.port}", "--timeout", "2"]) == 1
    assert "--server-key" in capsys.readouterr().err


def _vm_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("frames", ["one", "behind-an-empty-frame"])
def test_unauthenticated_large_messages_cost_the_server_no_memory(server_factory, frames):
    server = server_factory("--no-warmup")
    pid = server.proc.pid
    before = _vm_kib(pid, "VmHWM")
    head = msgpack.packb({"v": 1, "id": "big", "op": "inpaint", "token": "wrong"})
    n = 120_000_000
    body = b"\x85" + head[1:] + msgpack.packb("image") + b"\xc6" + n.to_bytes(4, "big")
    payload = zmq.Frame(body + bytes(n))
    socks = [_raw_dealer(server.endpoint) for _ in range(3)]
    try:
        for sock in socks:
            parts = [payload] if frames == "one" else [b"", payload]
            sock.send_multipart(parts, copy=False)
        for sock in socks:
            code = _final_reply(sock)[0]["error"]["code"]
            assert code == ("unauthorized" if frames == "one" else "bad_request")
        for sock in socks:  # a second message after the first one was read to its end
            sock.send(msgpack.packb({"v": 1, "id": "p", "op": "ping", "token": server.token}))
            assert _final_reply(sock, timeout=30)[0]["pong"] is True
    finally:
        for sock in socks:
            sock.close()
    grown_mib = (_vm_kib(pid, "VmHWM") - before) / 1024
    assert grown_mib < 48, f"peak RSS grew by {grown_mib:.0f} MiB for 3 refused 120 MB messages"


@pytest.mark.parametrize("use_pyzmq", [False, True], ids=["stdlib", "pyzmq"])
def test_large_authenticated_request_passes_the_gate_intact(running_server, use_pyzmq):
    w, h = 640, 512  # 1.3 MB of pixels: many gate reads
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[100:140, 200:260] = 255
    with LamaClient(running_server.endpoint, running_server.token, use_pyzmq=use_pyzmq) as c:
        out = c.inpaint(ImageData(w, h, "RGBA8", pixels.tobytes()), mask.tobytes())
    result = np.frombuffer(out.data, np.uint8).reshape(h, w, 4)
    assert (out.width, out.height) == (w, h)
    np.testing.assert_array_equal(result[:50], pixels[:50])  # far from the hole: untouched
