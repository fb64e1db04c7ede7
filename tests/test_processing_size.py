"""The processing size (protocol 1.6, ``options.resize_limit``): a large window filled at a
smaller size and the fill scaled up into the hole, on a real lama-server with the tiny fixture
model, through the client, ``lama-inpaint --server`` and the plug-ins' shared choices."""

from __future__ import annotations

import numpy as np
import pytest

from lama_client import host_kit
from lama_client.client import RESIZE_LIMIT_MINOR, ImageData, LamaClient
from lama_model.pipeline import InpaintOptions, inpaint
from lama_server.commands.inpaint import main as lama_inpaint
from lama_server.wire import protocol
from lama_server.wire.pixel_formats import array_to_wire, wire_to_array

SMALL_LIMIT = 256  # below the 600-pixel window: the fill is computed scaled down


def large_window(w: int = 600, h: int = 520, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """An RGBA8 window larger than :data:`SMALL_LIMIT` (gradients and noise) and a mask with
    a 200×160 hole in its middle."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=2)
    rgb = np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255)
    rgba = np.concatenate([rgb, np.full((h, w, 1), 255)], axis=2).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[180:340, 200:400] = 255
    return rgba, mask


@pytest.mark.parametrize("strategy", ["auto", "resize"])
def test_a_smaller_resize_limit_changes_only_the_hole_and_equals_the_local_call(
    running_server, served_tiny, strategy
):
    rgba, mask = large_window()
    h, w = mask.shape
    image = ImageData(w, h, "RGBA8", array_to_wire("RGBA8", rgba))
    with LamaClient(running_server.endpoint, running_server.token) as c:
        full = c.inpaint(image, mask.tobytes(), {"strategy": strategy})
        small = c.inpaint(image, mask.tobytes(), {"strategy": strategy}, resize_limit=SMALL_LIMIT)
    options = InpaintOptions(strategy=strategy, resize_limit=SMALL_LIMIT)
    expected = inpaint(served_tiny, rgba, mask, options)
    assert small.data == array_to_wire("RGBA8", expected.image)
    small_px = wire_to_array("RGBA8", w, h, small.data)
    full_px = wire_to_array("RGBA8", w, h, full.data)
    untouched = expected.alpha == 0
    assert untouched.mean() > 0.8  # most of the window lies outside the hole
    # Outside the hole (blend weight 0) the user's exact pixels, at either size.
    np.testing.assert_array_equal(small_px[untouched], rgba[untouched])
    np.testing.assert_array_equal(full_px[untouched], rgba[untouched])
    # Inside it the fill was computed at the smaller size: it differs from the full-size one.
    differs = (small_px != full_px).any(axis=2)
    assert differs[mask > 127].mean() > 0.5 and not differs[untouched].any()


def test_a_window_within_the_limit_is_filled_at_full_size(running_server):
    rgba, mask = large_window(w=240, h=200)
    mask[:] = 0
    mask[80:120, 90:150] = 255
    h, w = mask.shape
    image = ImageData(w, h, "RGBA8", array_to_wire("RGBA8", rgba))
    with LamaClient(running_server.endpoint, running_server.token) as c:
        default = c.inpaint(image, mask.tobytes())
        limited = c.inpaint(image, mask.tobytes(), resize_limit=SMALL_LIMIT)
    assert limited.data == default.data


def test_info_names_the_default_and_range_of_resize_limit(running_server):
    with LamaClient(running_server.endpoint, running_server.token) as c:
        info = c.info()
    assert info["protocol_minor"] >= RESIZE_LIMIT_MINOR
    assert info["resize_limit"] == {"default": InpaintOptions().resize_limit,
                                    "min": protocol.MIN_RESIZE_LIMIT,
                                    "max": protocol.MAX_RESIZE_LIMIT}  # fmt: skip


def test_the_plugins_sizes_lie_in_the_protocols_range_and_full_is_the_servers_default():
    assert host_kit.SERVER_RESIZE_LIMIT == InpaintOptions().resize_limit
    assert protocol.DEFAULT_RESIZE_LIMIT == InpaintOptions().resize_limit
    assert protocol.MINOR_VERSION >= RESIZE_LIMIT_MINOR
    full, *smaller = host_kit.PROCESSING_SIZES
    assert full.key == host_kit.DEFAULT_PROCESSING_SIZE and full.resize_limit is None
    limits = [size.resize_limit for size in smaller]
    assert limits == sorted(limits, reverse=True) and limits[0] < host_kit.SERVER_RESIZE_LIMIT
    assert all(protocol.MIN_RESIZE_LIMIT <= limit <= protocol.MAX_RESIZE_LIMIT for limit in limits)
    assert all(f"{limit} px" in size.label for limit, size in zip(limits, smaller, strict=True))
    assert host_kit.processing_size("fastest").resize_limit == limits[-1]


def test_lama_inpaint_passes_resize_limit_to_the_server(
    running_server, golden_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("LAMA_TOKEN_FILE", str(running_server.token_file))
    case = golden_dir / "case-a"
    argv = [str(case / "image.png"), str(case / "mask.png"), "-o", str(tmp_path / "out.png"),
            "--server", running_server.endpoint, "--resize-limit", "300", "--quiet"]  # fmt: skip
    assert lama_inpaint(argv) == 0
    assert "resize_limit=300 " in running_server.log()


@pytest.mark.parametrize("value", ["100", "5000"])
def test_lama_inpaint_refuses_a_resize_limit_out_of_the_servers_range(
    golden_dir, tmp_path, capsys, value
):
    case = golden_dir / "case-a"
    argv = [str(case / "image.png"), str(case / "mask.png"), "-o", str(tmp_path / "out.png"),
            "--server", "tcp://127.0.0.1:9", "--resize-limit", value]  # fmt: skip
    assert lama_inpaint(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "256..4096" in err and value in err
    assert not (tmp_path / "out.png").exists()
