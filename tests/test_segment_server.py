"""``segment`` through a real lama-server with the seeded tiny segmenter: the served mask is
the local segmenter's, the window's embedding is cached, bad prompts and a missing segmenter
are one-line errors, and a segment request never holds an inpaint request behind it."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
from conftest import start_server

from lama_client.client import ImageData, LamaClient
from lama_client.errors import Cancelled, LamaError
from lama_server.wire.pixel_formats import array_to_wire, rgb8


def disc_photo(w: int = 96, h: int = 80, seed: int = 0) -> np.ndarray:
    """A dark disc on a plain light background (with a little noise), RGB uint8."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.full((h, w, 3), (205, 200, 190), np.uint8)
    image[(xx - w * 0.45) ** 2 + (yy - h * 0.5) ** 2 < (h * 0.22) ** 2] = (40, 35, 50)
    noise = np.random.default_rng(seed).integers(-6, 7, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


DISC_BOX = (22.0, 20.0, 66.0, 60.0)  # around the disc of disc_photo()


@pytest.fixture(scope="module")
def segment_server(tmp_path_factory, tiny_model_dir, tiny_segmenter_path):
    server = start_server(tmp_path_factory.mktemp("seg"), tiny_model_dir,
                          "--segment-model", str(tiny_segmenter_path))  # fmt: skip
    yield server
    server.stop()


def as_image(pixels: np.ndarray, fmt: str = "RGB8") -> ImageData:
    h, w = pixels.shape[:2]
    return ImageData(w, h, fmt, array_to_wire(fmt, pixels))


def local_mask(segmenter, pixels: np.ndarray, box=None, points=None, labels=None):
    embedding = segmenter.embed(rgb8(pixels))
    return segmenter.predict(embedding, box=box, points=points, labels=labels)


def test_the_served_mask_is_the_local_segmenters(segment_server, tiny_segmenter):
    photo = disc_photo()
    with LamaClient(segment_server.endpoint, segment_server.token) as client:
        mask = client.segment(as_image(photo), box=DISC_BOX)
        pointed = client.segment(as_image(photo), points=[(40, 40), (5, 5)], labels=[1, 0])
    expected = local_mask(tiny_segmenter, photo, box=DISC_BOX)
    assert np.frombuffer(mask, np.uint8).reshape(80, 96).tolist() == (expected * 255).tolist()
    points = np.array([[40, 40], [5, 5]], np.float32)
    expected_points = local_mask(tiny_segmenter, photo, points=points, labels=np.array([1, 0]))
    assert np.array_equal(np.frombuffer(pointed, np.uint8).reshape(80, 96) > 0, expected_points)


def test_further_prompts_on_the_same_window_reuse_its_embedding(segment_server, tiny_segmenter_path):
    photo = disc_photo(seed=1)
    with LamaClient(segment_server.endpoint, segment_server.token) as client:
        client.segment(as_image(photo), box=DISC_BOX)
        assert client.last_timing["embedding_cached"] is False
        client.segment(as_image(photo), box=(10, 10, 50, 50))
        assert client.last_timing["embedding_cached"] is True
        other = photo.copy()
        other[0, 0, 0] ^= 1  # one bit: another window
        client.segment(as_image(other), box=DISC_BOX)
        assert client.last_timing["embedding_cached"] is False
        info = client.info()["segment"]
    assert info["loaded"] is True and info["model"] == str(tiny_segmenter_path)
    assert 1 <= info["cached_embeddings"] <= 4


def test_16_bit_and_alpha_windows_are_segmented_as_their_8_bit_colours(segment_server):
    photo = disc_photo(seed=2)
    rgba16 = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=2)
    rgba16 = rgba16.astype(np.uint16) * 257
    with LamaClient(segment_server.endpoint, segment_server.token) as client:
        eight = client.segment(as_image(photo), box=DISC_BOX)
        sixteen = client.segment(as_image(rgba16, "RGBA16"), box=DISC_BOX)
    assert eight == sixteen


@pytest.mark.parametrize(
    ("prompt", "text"),
    [
        ({"box": (0, 0, 97, 40)}, "outside the 96×80 image"),
        ({"box": (30, 30, 30, 40)}, "is empty"),
        ({"points": [(1, 1)] * 65}, "at most 64"),
        ({"points": [(1, 1)], "labels": [3]}, "1 (object) or 0 (background)"),
    ],
)
def test_bad_prompts_get_a_one_line_bad_request(segment_server, prompt, text):
    with LamaClient(segment_server.endpoint, segment_server.token) as client:
        with pytest.raises(LamaError) as caught:
            client.segment(as_image(disc_photo()), **prompt)
    assert caught.value.code == "bad_request"
    assert text in caught.value.message and "\n" not in caught.value.message


def test_the_segmenter_loads_on_the_first_request_only(server_factory, tiny_segmenter_path):
    server = server_factory("--segment-model", str(tiny_segmenter_path))
    with LamaClient(server.endpoint, server.token) as client:
        assert client.info()["segment"]["loaded"] is False
        stages = []
        client.segment(as_image(disc_photo()), box=DISC_BOX,
                       progress=lambda _f, stage: stages.append(stage))  # fmt: skip
        assert client.info()["segment"]["loaded"] is True
    assert [s for s in stages if s != "queued"] == ["load", "embed", "decode"]


def test_a_server_without_a_segmenter_says_so_in_one_line(server_factory, tmp_path):
    off = server_factory("--no-segment")
    missing = server_factory("--segment-model", str(tmp_path / "no-such-sam.pt"))
    for server, text in ((off, "--no-segment"), (missing, "no-such-sam.pt")):
        with LamaClient(server.endpoint, server.token) as client:
            with pytest.raises(LamaError) as caught:
                client.segment(as_image(disc_photo()), box=DISC_BOX)
            assert caught.value.code == "no_segmenter"
            assert text in caught.value.message and "\n" not in caught.value.message
            assert client.ping()["pong"] is True  # and it keeps serving
    with LamaClient(off.endpoint, off.token) as client:
        assert client.info()["segment"] is None


class SlowEncoder:
    """The tiny segmenter with an encoder pass that takes ``seconds``: long enough to see
    whether an inpaint request waits behind it."""

    def __init__(self, inner, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self.description = self.inner.description
        self.device = self.inner.device

    def embed(self, image):
        time.sleep(self.seconds)
        return self.inner.embed(image)

    def predict(self, embedding, box=None, points=None, labels=None):
        return self.inner.predict(embedding, box=box, points=points, labels=labels)


@contextlib.contextmanager
def in_process_server(tiny_model_dir, segmenter, encoder_s: float):
    """A real server (router, queues, worker threads, sockets) in this process, whose
    segmenter's encoder pass takes ``encoder_s``; yields its endpoint (token ``tok``)."""
    import torch

    from lama_model.factory import load_for_inference
    from lama_server.daemon.router import Server, ServerConfig
    from lama_server.daemon.segmenting import SegmentWorker
    from lama_server.daemon.worker import Worker
    from lama_server.wire.protocol import Limits

    model = load_for_inference(tiny_model_dir, torch.device("cpu"), "fp32")
    segment_worker = SegmentWorker("slow", "cpu", loader=lambda *_: SlowEncoder(segmenter, encoder_s))
    server = Server(ServerConfig("tcp://127.0.0.1:*", "tok", Limits(), pixel_files=False))
    endpoint = server.bind()
    thread = threading.Thread(target=server.serve, daemon=True,
                              args=([Worker(model, "tiny", "fp32")], None, segment_worker))
    thread.start()
    try:
        yield endpoint
    finally:
        server.stop()
        thread.join(10)


def test_an_inpaint_behind_a_segment_is_not_held_by_its_encoder_pass(tiny_model_dir, tiny_segmenter):
    encoder_s = 4.0
    finished = {}

    def segment(endpoint: str) -> None:
        with LamaClient(endpoint, "tok") as client:
            client.segment(as_image(disc_photo()), box=DISC_BOX)
        finished["segment"] = time.monotonic()

    with in_process_server(tiny_model_dir, tiny_segmenter, encoder_s) as endpoint:
        seg = threading.Thread(target=segment, args=(endpoint,))
        seg.start()
        with LamaClient(endpoint, "tok") as client:
            client.info()  # the segment request is on its way; give it its head start
            time.sleep(0.5)
            mask = bytes(96 * 80 - 1) + b"\xff"
            sent = time.monotonic()
            client.inpaint(as_image(disc_photo(seed=3)), mask, {"strategy": "original"})
            inpaint_s = time.monotonic() - sent
        seg.join(60)
    assert "segment" in finished
    assert inpaint_s < encoder_s / 2, f"the inpaint waited {inpaint_s:.1f} s"
    assert sent + inpaint_s < finished["segment"]


def test_a_segment_cancelled_during_its_encoder_pass_ends_cancelled(tiny_model_dir, tiny_segmenter):
    cancel = threading.Event()
    with in_process_server(tiny_model_dir, tiny_segmenter, 3.0) as endpoint:
        threading.Timer(1.0, cancel.set).start()
        with LamaClient(endpoint, "tok") as client:
            started = time.monotonic()
            with pytest.raises(Cancelled):
                client.segment(as_image(disc_photo()), box=DISC_BOX, cancel=cancel)
            assert time.monotonic() - started < 3.0 + 2.0  # at most the pass it was in
            assert client.ping()["pong"] is True


def test_a_large_window_travels_through_a_pixel_file(segment_server):
    """A local client passes a window over 256 KiB through the server's pixel folder, as for
    inpaint; the mask still comes back inline and is the same."""
    photo = np.tile(disc_photo(seed=4), (4, 4, 1))  # 384×320: 368,640 bytes as RGB8
    box = (60.0, 50.0, 300.0, 270.0)
    with LamaClient(segment_server.endpoint, segment_server.token) as client:
        through_file = client.segment(as_image(photo), box=box)
    with LamaClient(segment_server.endpoint, segment_server.token, pixel_files=False) as client:
        inline = client.segment(as_image(photo), box=box)
    assert through_file == inline
    assert "pixels=file" in segment_server.log() and "pixels=inline" in segment_server.log()
