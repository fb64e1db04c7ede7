"""Dynamic batching and several workers behind one endpoint (issue 14), with CPU workers.

Real ``lama-server`` processes on loopback with the tiny fixture model; ``--device cpu,cpu``
stands in for ``cuda:0,cuda:1`` (the same worker and scheduler code, another device).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lama_client.client import ImageData, LamaClient
from lama_model.devices import DeviceError, resolve_devices
from lama_model.factory import load_for_inference
from lama_model.pipeline import InpaintOptions, inpaint
from lama_server.daemon.scheduler import Job, Scheduler
from lama_server.daemon.worker import Worker
from lama_server.wire.protocol import Request, RequestOptions


def _job(rid: str, w: int = 64, h: int = 64, strategy: str = "auto", **extra) -> Job:
    options = RequestOptions(strategy=strategy)
    if extra:
        options = SimpleNamespace(**{**options.__dict__, **extra})
    return Job(Request("inpaint", rid, "t", width=w, height=h, options=options), [rid.encode()])


def _key(request: Request):
    return (request.width, request.height)


def test_next_batch_gathers_same_key_jobs_and_leaves_the_rest_in_order():
    sched = Scheduler(16)
    for rid, w in [("a", 64), ("b", 96), ("c", 64), ("d", 64), ("e", 64)]:
        assert sched.submit(_job(rid, w=w))
    batch = sched.next_batch(0.1, key=_key, max_batch=3, wait=0.0)
    assert [j.request.id for j in batch] == ["a", "c", "d"]
    assert [j.request.id for j in sched.next_batch(0.1, key=_key, max_batch=3)] == ["b"]
    assert [j.request.id for j in sched.next_batch(0.1, key=_key, max_batch=3)] == ["e"]
    assert sched.next_batch(0.01, key=_key, max_batch=3) == []


def test_next_batch_waits_for_late_arrivals_within_the_window():
    sched = Scheduler(16)
    sched.submit(_job("first"))
    threading.Timer(0.05, lambda: sched.submit(_job("late"))).start()
    batch = sched.next_batch(0.1, key=_key, max_batch=4, wait=1.0)
    # Stops waiting as soon as it has max_batch or the window ends; here the window ends.
    assert [j.request.id for j in batch] == ["first", "late"]


def test_jobs_without_a_key_run_alone():
    sched = Scheduler(8)
    for rid in "abc":
        sched.submit(_job(rid))
    batch = sched.next_batch(0.1, key=lambda r: None, max_batch=8, wait=0.5)
    assert [j.request.id for j in batch] == ["a"]


def test_two_consumers_track_and_cancel_their_own_running_jobs():
    sched = Scheduler(8)
    for rid in "ab":
        sched.submit(_job(rid))
    got: dict[str, list[Job]] = {}
    done = threading.Event()

    def consume(name):
        got[name] = sched.next_batch(1.0)
        done.wait(2)
        sched.finished()

    threads = [threading.Thread(target=consume, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    while sched.running < 2:
        time.sleep(0.01)
    assert sched.busy and len(sched) == 0
    job_b = next(j for batch in got.values() for j in batch if j.request.id == "b")
    assert sched.cancel(b"b", "b") is job_b and job_b.cancelled.is_set()
    assert sched.is_running(job_b)
    done.set()
    for t in threads:
        t.join()
    assert not sched.busy


def test_batch_key_only_for_whole_image_requests_and_never_for_refine(tiny_model):
    worker = Worker(tiny_model, "tiny", "fp32", max_batch=4)
    assert worker.batch_key(_job("a", strategy="original").request) == (64, 64)
    assert worker.batch_key(_job("a", strategy="auto").request) == (64, 64)
    assert worker.batch_key(_job("a", w=2000, strategy="auto").request) is None  # crops
    # The request's own resize limit decides what auto does (protocol 1.6).
    assert worker.batch_key(_job("a", w=600, strategy="auto").request) == (600, 64)
    assert worker.batch_key(_job("a", w=600, strategy="auto", resize_limit=512).request) is None
    assert worker.batch_key(_job("a", strategy="crop").request) is None
    assert worker.batch_key(_job("a", strategy="original", refine=True).request) is None
    assert Worker(tiny_model, "tiny", "fp32").batch_key(_job("a").request) is None  # batch 1


def test_resolve_devices_lists_and_clear_errors():
    assert resolve_devices("cpu,cpu") == [torch.device("cpu")] * 2
    assert resolve_devices("cpu") == [torch.device("cpu")]
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_devices("cpu,tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA was requested"):
            resolve_devices("cuda:all")
    else:
        assert len(resolve_devices("cuda:all")) == torch.cuda.device_count()


def test_bad_device_list_is_a_one_line_error(tmp_path, tiny_model_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "lama_server.commands.serve", "--model", str(tiny_model_dir),
         "--device", "cpu,nonsense", "--token-file", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 78  # a configuration error
    assert "unknown device 'nonsense'" in proc.stderr and "Traceback" not in proc.stderr


def test_concurrent_clients_are_batched_across_two_cpu_workers(server_factory, tiny_model_dir):
    server = server_factory("--device", "cpu,cpu", "--batch", "4", "--batch-wait-ms", "300",
                            "--precision", "fp32")  # fmt: skip
    rng = np.random.default_rng(7)
    n, size = 8, 48
    images = [rng.integers(0, 256, (size, size, 4), dtype=np.uint8) for _ in range(n)]
    mask = np.zeros((size, size), np.uint8)
    mask[10:30, 12:28] = 255
    replies: dict[int, np.ndarray] = {}
    errors: list[Exception] = []
    start = threading.Barrier(n)

    def client(i):
        try:
            with LamaClient(server.endpoint, server.token, use_pyzmq=bool(i % 2)) as c:
                # Half of them pass pixels through a pixel file: batched answers are written
                # back into the file as the filled region only.
                c.pixel_file_min_bytes = 0 if i % 4 < 2 else 1 << 30
                start.wait()
                out = c.inpaint(ImageData(size, size, "RGBA8", images[i].tobytes()),
                                mask.tobytes(), {"strategy": "original"})  # fmt: skip
                assert c.last_used_pixel_file is (i % 4 < 2)
            replies[i] = np.frombuffer(out.data, np.uint8).reshape(size, size, 4)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    model = load_for_inference(tiny_model_dir, torch.device("cpu"), "fp32")
    for i in range(n):
        expected = inpaint(model, images[i], mask, InpaintOptions(strategy="original")).image
        diff = np.abs(replies[i].astype(int) - expected.astype(int))
        assert diff.max() <= 1  # a batched convolution may sum in another order
        np.testing.assert_array_equal(replies[i][mask == 0][:, 3], images[i][mask == 0][:, 3])
    with LamaClient(server.endpoint, server.token) as c:
        devices = c.info()["devices"]
    assert [d["device"] for d in devices] == ["cpu", "cpu"]
    assert sum(d["completed"] for d in devices) == n  # warm-ups are not requests
    assert max(d["largest_batch"] for d in devices) >= 2
    assert all(d["max_batch"] == 4 for d in devices)


@pytest.mark.parametrize("fmt", ["BGRA8", "RGBA16", "GRAY8", "RGB8", "GRAYA16"])
def test_patched_reply_is_the_same_message_as_encoding_the_whole_result(fmt):
    import msgpack

    from lama_model.geometry import Box
    from lama_model.pipeline import RegionResult
    from lama_server.wire.pixel_formats import FORMATS, wire_to_array
    from lama_server.wire.replies import ok_reply

    spec = FORMATS[fmt]
    w, h = 37, 23
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, w * h * spec.bytes_per_pixel, dtype=np.uint8).tobytes()
    image = wire_to_array(fmt, w, h, data)
    box = Box(3, 5, 17, 30)
    top = np.iinfo(image.dtype).max
    patch = rng.integers(0, top + 1, (box.height, box.width, image.shape[2])).astype(image.dtype)
    alpha = np.ones((box.height, box.width), np.float32)
    region = RegionResult(image, box, patch, alpha)
    request = Request("inpaint", "r1", "t", width=w, height=h, format=fmt,
                      image_data=memoryview(data), options=RequestOptions())  # fmt: skip
    patched = ok_reply(request, region, 1.0, 2.0)
    assert isinstance(patched, bytearray)
    whole = ok_reply(request, region.full(), 1.0, 2.0)
    assert msgpack.unpackb(bytes(patched), raw=False) == msgpack.unpackb(whole, raw=False)


def test_workers_sharing_a_gpu_never_run_two_forwards_at_once(tiny_model):
    """Their model calls take turns (the lock lama-server gives workers on one GPU)."""
    inside, overlaps = [0], []

    class Probe(torch.nn.Module):
        size_multiple = 8
        device = torch.device("cpu")

        def forward(self, image, mask):
            inside[0] += 1
            overlaps.append(inside[0])
            time.sleep(0.02)
            inside[0] -= 1
            return image

    lock = threading.Lock()
    workers = [Worker(Probe(), "probe", "fp32", device_lock=lock) for _ in range(2)]
    assert workers[0].device == torch.device("cpu") and workers[0].model.size_multiple == 8
    image = np.zeros((16, 16, 3), np.uint8)
    mask = np.full((16, 16), 255, np.uint8)
    threads = [
        threading.Thread(target=lambda w=w: [w.runner(image, mask) for _ in range(3)])
        for w in workers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 6 and max(overlaps) == 1
