"""The ``segment`` op's wire rules (protocol 1.4) and the mask rules the plug-ins share
(``lama_client.host_kit``): no model, no sockets."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from lama_client import host_kit
from lama_model.geometry import HOLE_THRESHOLD, ring_distance
from lama_server.wire import protocol
from lama_server.wire.protocol import Limits, ProtocolError


def segment_frame(w: int = 16, h: int = 12, fmt: str = "RGB8", **prompt) -> bytes:
    """A ``segment`` request frame with a grey ``w``×``h`` image and ``prompt``'s fields."""
    from lama_server.wire.pixel_formats import FORMATS

    data = bytes(w * h * FORMATS[fmt].bytes_per_pixel)
    message = {"v": 1, "id": "seg-1", "op": "segment", "token": "t",
               "image": {"w": w, "h": h, "format": fmt, "data": data}, **prompt}  # fmt: skip
    return msgpack.packb(message, use_bin_type=True)


def refusal(frame: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode(frame, Limits())
    return caught.value


def test_segment_is_a_known_op_of_protocol_1_4():
    assert "segment" in protocol.OPS
    assert protocol.MINOR_VERSION >= 4  # 1.5 added the error code unavailable


def test_a_box_and_points_are_read_as_floats_in_window_pixels():
    frame = segment_frame(box=[1, 2, 10.5, 11], points=[[3, 4], [5.25, 6]], labels=[1, 0])
    request = protocol.decode(frame, Limits())
    assert request.prompt == protocol.SegmentPrompt(
        (1.0, 2.0, 10.5, 11.0), ((3.0, 4.0), (5.25, 6.0)), (1, 0)
    )
    assert (request.width, request.height, request.format) == (16, 12, "RGB8")


@pytest.mark.parametrize(
    ("prompt", "text"),
    [
        ({}, "needs a box or points"),
        ({"box": [0, 0, 5]}, "array of 4 numbers"),
        ({"box": "0,0,5,5"}, "array of 4 numbers"),
        ({"box": [0, 0, True, 5]}, "array of 4 numbers"),
        ({"box": [0, 0, math.nan, 5]}, "finite"),
        ({"box": [0, 0, math.inf, 5]}, "finite"),
        ({"box": [5, 0, 5, 5]}, "is empty"),
        ({"box": [6, 6, 2, 9]}, "is empty"),
        ({"box": [-1, 0, 5, 5]}, "outside the 16×12 image"),
        ({"box": [0, 0, 17, 5]}, "outside the 16×12 image"),
        ({"points": [[1, 1]], "labels": []}, "need as many labels"),
        ({"points": [[1, 1]], "labels": [2]}, "1 (object) or 0 (background)"),
        ({"points": [[1, 1]], "labels": [True]}, "1 (object) or 0 (background)"),
        ({"points": [[1, math.nan]], "labels": [1]}, "finite"),
        ({"points": [[1, 2, 3]], "labels": [1]}, "array of 2 numbers"),
        ({"points": [[20, 2]], "labels": [1]}, "outside the 16×12 image"),
        ({"points": {"x": 1}, "labels": [1]}, "must be arrays"),
        ({"points": [[1, 1]] * 65, "labels": [1] * 65}, "at most 64"),
    ],
)
def test_bad_prompts_get_one_line_bad_request(prompt, text):
    error = refusal(segment_frame(**prompt))
    assert error.code == "bad_request"
    assert text in error.message
    assert "\n" not in error.message
    assert error.request_id == "seg-1"


def test_a_segment_image_follows_the_inpaint_image_rules():
    big = msgpack.packb({"v": 1, "id": "x", "op": "segment", "token": "t", "box": [0, 0, 1, 1],
                         "image": {"w": 10_000, "h": 10_000, "format": "RGB8", "data": b""}})
    assert refusal(big).code == "too_large"
    short = msgpack.packb({"v": 1, "id": "x", "op": "segment", "token": "t", "box": [0, 0, 1, 1],
                           "image": {"w": 4, "h": 4, "format": "RGB8", "data": b"\0" * 47}})
    assert "needs 48" in refusal(short).message
    unknown = segment_frame(fmt="RGB8").replace(b"RGB8", b"CMYK")
    assert "unknown pixel format" in refusal(unknown).message


def test_a_segment_image_may_come_as_a_pixel_file():
    message = {"v": 1, "id": "x", "op": "segment", "token": "t", "box": [0, 0, 4, 4],
               "image": {"w": 4, "h": 4, "format": "RGBA8",
                         "file": {"name": "f1", "offset": 0}}}  # fmt: skip
    request = protocol.decode(msgpack.packb(message), Limits())
    assert request.image_file is not None and request.image_file.nbytes == 64
    assert request.mask_file is None


def test_the_protocol_point_limit_is_the_segmenters():
    from lama_model import segment

    assert protocol.MAX_POINTS == segment.MAX_POINTS


def test_the_mask_threshold_is_the_servers():
    assert host_kit.MASK_THRESHOLD == HOLE_THRESHOLD


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 9])
def test_grow_mask_grows_as_the_server_grows_an_inpaint_mask(radius):
    rng = np.random.default_rng(radius)
    mask = (rng.random((23, 31)) > 0.97).astype(np.uint8) * 200
    mask[0, 0] = mask[22, 30] = 255  # corners: nothing may wrap into the next row
    grown = host_kit.grow_mask(mask.tobytes(), 31, 23, radius)
    expected = ring_distance(mask > HOLE_THRESHOLD, radius) <= radius
    np.testing.assert_array_equal(np.frombuffer(grown, np.uint8).reshape(23, 31), expected * 255)


def test_mask_box_is_the_box_of_the_selected_bytes():
    mask = np.zeros((9, 13), np.uint8)
    assert host_kit.mask_box(mask.tobytes(), 13, 9) is None
    mask[2:5, 3:7] = 255
    mask[7, 11] = 128
    mask[0, 0] = 127  # not selected: at most the threshold
    assert host_kit.mask_box(mask.tobytes(), 13, 9) == (3, 2, 12, 8)


def test_the_gate_passes_a_small_request_whose_envelope_leads_many_points():
    """The envelope within the first SCAN_OBJECTS objects, as documented: a segment request
    with 64 points (about 200 msgpack objects after it) reaches the server."""
    frame = segment_frame(points=[[1, 1]] * 64, labels=[1] * 64)
    assert protocol.screen(frame, len(frame), lambda token: token == "t") == "segment"


def test_the_gate_refuses_a_token_hidden_behind_many_objects():
    message = {"v": 1, "id": "x", "op": "segment", "points": [[1, 1]] * 100, "token": "t"}
    frame = msgpack.packb(message)
    with pytest.raises(ProtocolError) as caught:
        protocol.screen(frame, len(frame), lambda token: token == "t")
    assert caught.value.code == "unauthorized"
