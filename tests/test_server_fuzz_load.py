"""The server under random and mutated messages, and under concurrent load (loopback only)."""

from __future__ import annotations

import random
import threading
import time
import uuid

import msgpack
import numpy as np
import zmq

from lama_client.client import ImageData, LamaClient


def _valid_inpaint(token: str, rng: random.Random) -> dict:
    w, h = rng.randint(1, 24), rng.randint(1, 24)
    return {
        "v": 1, "id": uuid.uuid4().hex, "token": token, "op": "inpaint",
        "image": {"w": w, "h": h, "format": "RGBA8", "data": bytes(rng.getrandbits(8) for _ in range(w * h * 4))},
        "mask": {"w": w, "h": h, "data": bytes(rng.choice((0, 255)) for _ in range(w * h))},
        "options": {"mask_grow": 1, "feather": 1},
    }  # fmt: skip


def _mutate(obj, rng: random.Random, depth: int = 0):
    junk = [None, True, -1, 2**40, 1e308, float("nan"), "", "x" * 70, b"\0", [], {}, [1, 2]]
    if isinstance(obj, dict) and obj:
        obj = dict(obj)
        key = rng.choice(list(obj))
        choice = rng.random()
        if choice < 0.3:
            del obj[key]
        elif choice < 0.7 or depth > 2:
            obj[key] = rng.choice(junk)
        else:
            obj[key] = _mutate(obj[key], rng, depth + 1)
        return obj
    return rng.choice(junk)


def _messages(token: str, count: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))))
        elif kind == 1:
            packed = bytearray(msgpack.packb(_valid_inpaint(token, rng), use_bin_type=True))
            for _ in range(rng.randint(1, 8)):
                packed[rng.randrange(len(packed))] = rng.getrandbits(8)
            out.append(bytes(packed))
        else:
            msg = _mutate(_valid_inpaint(token, rng), rng)
            if isinstance(msg, dict) and kind == 3:
                msg = _mutate(msg, rng)
            out.append(msgpack.packb(msg, use_bin_type=True))
    return out


def test_fuzzed_messages_all_get_answers_and_server_keeps_serving(server_factory, tiny_model_dir):
    server = server_factory("--queue", "64", "--no-warmup")
    messages = _messages(server.token, 2000)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    finals = 0
    deadline = time.monotonic() + 90
    for start in range(0, len(messages), 50):  # bounded bursts so the queue limit is not the point
        batch = messages[start : start + 50]
        for m in batch:
            sock.send(m)
        want = finals + len(batch)
        while finals < want and time.monotonic() < deadline:
            if sock.poll(2000):
                reply = msgpack.unpackb(sock.recv(), raw=False)
                assert isinstance(reply, dict)
                if "ok" in reply:
                    finals += 1
                    if not reply["ok"]:
                        assert reply["error"]["code"] in (
                            "bad_request", "unauthorized", "unsupported_version", "unknown_op",
                            "too_large", "busy",
                        )  # fmt: skip
    sock.close()
    assert finals == len(messages)
    assert server.proc.poll() is None
    rng = np.random.default_rng(0)
    with LamaClient(server.endpoint, server.token, use_pyzmq=False) as c:
        assert c.ping()["pong"]
        rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 8:16] = 255
        reply = c.inpaint(ImageData(32, 32, "RGBA8", rgba.tobytes()), mask.tobytes())
        assert len(reply.data) == 32 * 32 * 4


def test_eight_clients_times_25_requests_none_lost(server_factory):
    server = server_factory("--queue", "8", "--no-warmup")
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def client_loop(n: int) -> None:
        rng = np.random.default_rng(n)
        got = []
        try:
            with LamaClient(server.endpoint, server.token, use_pyzmq=bool(n % 2), timeout=60) as c:
                for _ in range(25):
                    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
                    mask = np.zeros((64, 64), np.uint8)
                    mask[20:40, 20:40] = 255
                    reply = c.inpaint(ImageData(64, 64, "RGBA8", rgba.tobytes()), mask.tobytes())
                    out = np.frombuffer(reply.data, np.uint8).reshape(64, 64, 4)
                    # Correct answer: untouched far away, filled inside, alpha kept.
                    assert np.array_equal(out[:10], rgba[:10])
                    assert np.array_equal(out[..., 3], rgba[..., 3])
                    got.append(reply)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        results[n] = got

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # 8 clients with one request in flight each fit queue 8 + the running one: a busy reply
    # would have raised LamaError in a client thread.
    assert not errors, errors[:3]
    assert sum(len(v) for v in results.values()) == 200
    assert time.monotonic() - start < 120
