"""The client's own msgpack codec and ZMTP framing agree with the real libraries."""

from __future__ import annotations

import math
import threading

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from lama_client import client, wire

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text() | st.binary()
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=20) | st.dictionaries(st.text(), children, max_size=20)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_our_encoding_decodes_with_real_msgpack(value):
    assert msgpack.unpackb(wire.packb(value), raw=False, strict_map_key=False) == value


@settings(max_examples=300, deadline=None)
@given(values)
def test_real_msgpack_encoding_decodes_with_ours(value):
    assert wire.unpackb(msgpack.packb(value, use_bin_type=True)) == value


@given(st.floats(width=32, allow_nan=False))
def test_float32_from_real_msgpack(value):
    packed = msgpack.packb(value, use_single_float=True)
    assert wire.unpackb(packed) == value


def test_nan_round_trips():
    assert math.isnan(wire.unpackb(msgpack.packb(float("nan"))))


def test_large_containers_and_strings_use_wide_headers():
    value = {"k": ["x" * 70000, b"y" * 70000, list(range(70000))], **{str(i): i for i in range(20)}}
    assert msgpack.unpackb(wire.packb(value), raw=False) == value
    assert wire.unpackb(msgpack.packb(value, use_bin_type=True)) == value


def test_pieces_are_the_encoding_and_large_bins_are_not_copied():
    image = bytearray(b"\x07" * 300_000)
    small = b"s" * 100
    value = {"v": 1, "image": {"w": 3, "data": image}, "mask": memoryview(b"m" * 70_000),
             "small": small, "list": [image, 5]}  # fmt: skip
    parts = wire.pack_parts(value)
    assert b"".join(parts) == msgpack.packb(value, use_bin_type=True) == wire.packb(value)
    large = [p for p in parts if isinstance(p, memoryview)]
    assert len(large) == 3 and large[0].obj is image and large[2].obj is image
    image[0] = 9  # the pieces are views: they show the caller's buffer as it is when sent
    assert large[0][0] == 9


@pytest.mark.parametrize(
    "data",
    [b"", b"\x92\x01", b"\xc4\x10abc", b"\xdb\xff\xff\xff\xffab", b"\xdd\xff\xff\xff\xff", b"\xc1",
     b"\xa2\xff\xfe", b"\x81\x90\x01", b"\x01\x02", b"\x91" * 100 + b"\x01"],
)  # fmt: skip
def test_malformed_input_is_a_clear_error(data):
    with pytest.raises(wire.MsgpackError):
        wire.unpackb(data)


@given(st.binary(max_size=64))
def test_random_bytes_never_crash_the_decoder(data):
    try:
        wire.unpackb(data)
    except wire.MsgpackError:
        pass


def test_unsupported_type_is_refused():
    with pytest.raises(wire.MsgpackError, match="cannot encode"):
        wire.packb({"x": object()})


class RouterEcho:
    """A real libzmq ROUTER that answers each message with N copies of it."""

    def __init__(self, copies: int = 1) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.copies = copies
        self.seen: list[list[bytes]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(50):
                frames = self.sock.recv_multipart()
                self.seen.append(frames)
                for _ in range(self.copies):
                    self.sock.send_multipart(frames)
        self.sock.close(0)
        self.ctx.term()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 70000, 5 * 2**20])
def test_zmtp_frames_reach_a_real_router_intact(size):
    router = RouterEcho()
    try:
        conn = client.ZmtpConnection(router.endpoint, 2.0)
        payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        conn.send(payload)
        assert conn.recv(10.0) == payload
        assert router.seen[0][1] == payload  # [identity, payload]: one frame from a DEALER
        conn.close()
    finally:
        router.close()


def test_several_replies_to_one_request_arrive_in_order():
    router = RouterEcho(copies=3)
    try:
        conn = client.ZmtpConnection(router.endpoint, 2.0)
        conn.send(b"hello")
        assert [conn.recv(5.0) for _ in range(3)] == [b"hello"] * 3
        assert conn.recv(0.2) is None
        conn.close()
    finally:
        router.close()


def test_greeting_and_frame_layout():
    greeting = wire.zmtp_greeting()
    assert len(greeting) == 64 and greeting[0] == 0xFF and greeting[9] == 0x7F
    assert greeting[10] == 3 and greeting[12:16] == b"NULL"
    assert wire.zmtp_frame(b"ab") == b"\x00\x02ab"
    assert wire.zmtp_frame(b"x" * 300)[:9] == b"\x02" + (300).to_bytes(8, "big")
    assert wire.zmtp_frame(b"", more=True, command=True) == b"\x05\x00"
