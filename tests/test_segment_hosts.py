"""Select object in the real hosts (Krita 5.1/5.3/6.0 under Xvfb, GIMP 3.0/3.2 in batch mode),
against a real lama-server serving the seeded tiny segmenter: a rectangle selection around a
dark disc on a plain background becomes exactly the server's mask of it (the test asks the
same server for it afterwards: a cache hit, so the window is the one the plug-in sent), grown
as set; and
Remove object with "Select object first" fills exactly that mask.

With random tiny weights the mask is not a good outline of the disc (that needs the real
weights); what these tests prove is the path: the plug-in sends the selection's box, applies
the server's answer unchanged but for the grow setting, and inpaints that mask. Slow (a host launch each): run with ``-k segment`` or this file alone.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO, host_missing, start_server
from hosts.real_hosts import GIMP_HOSTS, KRITA_HOSTS, free_display
from PIL import Image

from lama_client import host_kit
from lama_client.client import ImageData, LamaClient
from lama_model.factory import load_for_inference
from lama_model.pipeline import InpaintOptions, inpaint
from lama_server.commands.plugins import enable_in_kritarc
from lama_server.wire.pixel_formats import array_to_wire, wire_to_array
from lama_server.wire.replies import layer_pixels

pytestmark = pytest.mark.hosts
PRECISION = "fp32"
SELECTION = [60, 40, 90, 80]  # x, y, w, h: a loose rectangle around the disc
GROW = 3
#: Dots on a "lama points" layer (x, y, size, BGR): one on the disc, a red one beside it.
DOTS = [[100, 75, 4, [60, 200, 40]], [70, 50, 3, [30, 30, 220]]]


def write_disc_photo(path) -> None:
    """A dark disc (radius 30) on a plain light background, 200×160 RGB."""
    yy, xx = np.mgrid[0:160, 0:200]
    pixels = np.full((160, 200, 3), (210, 205, 195), np.uint8)
    pixels[(xx - 105) ** 2 + (yy - 80) ** 2 < 30**2] = (35, 30, 45)
    Image.fromarray(pixels).save(path)


def expected_selection(session, source: np.ndarray, fmt: str, box, points=(), labels=(), grow=GROW):
    """What the session's server answers for these prompts on these pixels (asked again after
    the host ran: the same server, its cached embedding), grown by ``grow`` as the plug-ins
    grow it (Select object: the grow setting; Remove object: 0, the server grows it)."""
    h, w = source.shape[:2]
    server = session["server"]
    with LamaClient(server.endpoint, server.token) as client:
        found = client.segment(ImageData(w, h, fmt, array_to_wire(fmt, source)), box=box,
                               points=points, labels=labels)  # fmt: skip
        assert client.last_timing["embedding_cached"] is True  # the window the plug-in sent
    return np.frombuffer(host_kit.grow_mask(found, w, h, grow), np.uint8).reshape(h, w)


def expected_layer(tiny_model_dir, source: np.ndarray, mask: np.ndarray, fmt: str) -> bytes:
    model = load_for_inference(tiny_model_dir, torch.device("cpu"), PRECISION)
    result = inpaint(model, source, mask, InpaintOptions(mask_grow=GROW, feather=4))
    return array_to_wire(fmt, layer_pixels(result.image, result.alpha, fmt))


def segment_server(tmp, tiny_model_dir, segmenter_path):
    return start_server(tmp, tiny_model_dir, "--precision", PRECISION,
                        "--segment-model", str(segmenter_path))  # fmt: skip


@pytest.fixture(scope="module", params=KRITA_HOSTS, ids=lambda host: host.id)
def krita_segment(request, tmp_path_factory, tiny_model_dir, tiny_segmenter_path):
    host = request.param
    if host.missing():
        host_missing(host.missing())
    tmp = tmp_path_factory.mktemp(f"seg-{host.id}")
    work_in, home_in = ("/lama-seg-krita", "/home/lama-seg-krita") if host.root else (str(tmp / "work"), str(tmp / "home"))  # fmt: skip
    work, home = host.fresh_dir(work_in), host.fresh_dir(home_in)
    host.install_plugin(home_in)
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    driver = REPO / "tests" / "hosts" / "krita"
    shutil.copytree(driver / "lama_testdriver", pykrita / "lama_testdriver")
    shutil.copy(driver / "lama_testdriver.desktop", pykrita)
    enable_in_kritarc(home / ".config" / "kritarc", "lama_testdriver")
    server = segment_server(tmp, tiny_model_dir, tiny_segmenter_path)
    write_disc_photo(work / "disc.png")
    image, live = f"{work_in}/disc.png", server.endpoint
    plan = {"out": work_in, "watchdog_ms": 150000, "scenarios": [
        {"name": "select", "action": "lama_select_object", "image": image, "endpoint": live, "selection": SELECTION, "mask_grow": GROW},
        {"name": "select_first", "select_first": True, "image": image, "endpoint": live, "selection": SELECTION, "mask_grow": GROW},
        {"name": "select_dots", "action": "lama_select_object", "image": image, "endpoint": live, "selection": SELECTION, "mask_grow": GROW, "dots": DOTS},
    ]}  # fmt: skip
    (work / "plan.json").write_text(json.dumps(plan))
    env = {"HOME": home_in, "LAMA_TEST_PLAN": f"{work_in}/plan.json", "LAMA_TOKEN": server.token}
    cmd = ["xvfb-run", "-n", str(free_display()), "-s", "-screen 0 1280x1024x24", "krita", "--nosplash"]  # fmt: skip
    proc = host.run(cmd, env, 180)
    result_file = work / "result.json"
    assert result_file.is_file(), f"Krita wrote no result (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"  # fmt: skip
    scenarios = {s["name"]: s for s in json.loads(result_file.read_text())["scenarios"]}
    yield {"out": work, "scenarios": scenarios, "log": proc.stdout + proc.stderr,
           "server": server}  # fmt: skip
    server.stop()


def _krita_scenario(session, name):
    s = session["scenarios"].get(name)
    assert s is not None, f"scenario {name} did not run:\n{session['log'][-3000:]}"
    assert s["ok"], s.get("error") or s
    x, y, w, h = s["window"]
    raw = {label: (session["out"] / f"{name}.{label}.raw").read_bytes()
           for label in ("source_window", "mask_window")}  # fmt: skip
    source = wire_to_array("BGRA8", w, h, raw["source_window"])
    mask = np.frombuffer(raw["mask_window"], np.uint8).reshape(h, w)
    box = host_kit.mask_box(raw["mask_window"], w, h)
    return s, source, mask, box


def test_krita_select_object_applies_the_servers_mask_grown(krita_segment):
    s, source, _, box = _krita_scenario(krita_segment, "select")
    x, y, w, h = s["window"]
    assert box == (SELECTION[0] - x, SELECTION[1] - y, SELECTION[0] - x + SELECTION[2], SELECTION[1] - y + SELECTION[3])  # fmt: skip
    selected = np.frombuffer((krita_segment["out"] / "select.selected_window.raw").read_bytes(),
                             np.uint8).reshape(h, w)  # fmt: skip
    np.testing.assert_array_equal(selected, expected_selection(krita_segment, source, "BGRA8", box))
    assert s["source_unchanged"] is True and "LaMa: removed" not in s["siblings"]


def test_krita_dots_on_a_points_layer_are_sent_as_labelled_points(krita_segment):
    s, source, _, box = _krita_scenario(krita_segment, "select_dots")
    x, y, w, h = s["window"]
    centres = sorted((dy - y + size / 2, dx - x + size / 2, 0 if bgr[2] > 200 else 1)
                     for dx, dy, size, bgr in DOTS)  # top to bottom, as the plug-in sends them
    points = [(cx, cy) for cy, cx, _ in centres]
    labels = [label for _, _, label in centres]
    selected = np.frombuffer((krita_segment["out"] / "select_dots.selected_window.raw").read_bytes(),
                             np.uint8).reshape(h, w)  # fmt: skip
    expected = expected_selection(krita_segment, source, "BGRA8", box, points, labels)
    np.testing.assert_array_equal(selected, expected)


def test_krita_remove_with_select_first_fills_the_object_mask(krita_segment, tiny_model_dir):
    s, source, _, box = _krita_scenario(krita_segment, "select_first")
    assert "LaMa: removed" in s["siblings"]
    mask = expected_selection(krita_segment, source, "BGRA8", box, grow=0)  # grown once, there
    got = (krita_segment["out"] / "select_first.new_window.raw").read_bytes()
    assert got == expected_layer(tiny_model_dir, source, mask, "BGRA8")


GIMP_WORK, GIMP_HOME = "/lama-seg-gimp", "/home/lama-seg-gimp"


@pytest.fixture(scope="module", params=GIMP_HOSTS, ids=lambda host: host.id)
def gimp_segment(request, tmp_path_factory, tiny_model_dir, tiny_segmenter_path):
    host = request.param
    if host.missing():
        host_missing(host.missing())
    console = f"gimp-console-{host.series}"
    work = host.fresh_dir(GIMP_WORK)
    host.fresh_dir(GIMP_HOME)
    first = host.run([console, "-i", "--quit"], {"HOME": GIMP_HOME}, 120)
    assert first.returncode == 0, first.stderr[-2000:]
    host.install_plugin(GIMP_HOME)
    server = segment_server(tmp_path_factory.mktemp(f"seg-{host.id}"), tiny_model_dir,
                            tiny_segmenter_path)
    write_disc_photo(work / "disc.png")
    shutil.copy(REPO / "tests" / "hosts" / "gimp" / "gimp_driver.py", work / "driver.py")
    photo, live = f"{GIMP_WORK}/disc.png", server.endpoint
    plan = {"out": GIMP_WORK, "scenarios": [
        {"name": "select", "action": "select_object", "image": photo, "endpoint": live, "selection": SELECTION, "mask_grow": GROW},
        {"name": "select_first", "select_first": True, "image": photo, "endpoint": live, "selection": SELECTION, "mask_grow": GROW},
    ]}  # fmt: skip
    (work / "plan.json").write_text(json.dumps(plan))
    env = {"HOME": GIMP_HOME, "LAMA_TEST_PLAN": f"{GIMP_WORK}/plan.json", "LAMA_TOKEN": server.token}
    cmd = [console, "-i", "--batch-interpreter=python-fu-eval", "-b", f'exec(open("{GIMP_WORK}/driver.py").read())', "--quit"]  # fmt: skip
    proc = host.run(cmd, env, 240)
    result_file = work / "result.json"
    assert result_file.is_file(), f"GIMP wrote no result (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"  # fmt: skip
    scenarios = {s["name"]: s for s in json.loads(result_file.read_text())["scenarios"]}
    yield {"out": work, "scenarios": scenarios, "log": proc.stdout + proc.stderr,
           "server": server}  # fmt: skip
    server.stop()


def _gimp_window(session, name):
    """The scenario, its whole layer (RGBA8), the window the plug-in sent, and its box."""
    s = session["scenarios"].get(name)
    assert s is not None and s["ok"], (s or {}).get("error") or session["log"][-3000:]
    iw, ih = s["image_size"]
    layer = wire_to_array("RGBA8", iw, ih, (session["out"] / f"{name}.source.raw").read_bytes())
    sx, sy, sw, sh = SELECTION
    x0, y0, x1, y1 = host_kit.context_window((sx, sy, sx + sw, sy + sh), (0, 0, iw, ih), 0)
    box = (sx - x0, sy - y0, sx - x0 + sw, sy - y0 + sh)
    return s, layer, (x0, y0, x1, y1), box


def test_gimp_select_object_applies_the_servers_mask_grown(gimp_segment):
    s, layer, (x0, y0, x1, y1), box = _gimp_window(gimp_segment, "select")
    assert s["status"] == "success", s
    iw, ih = s["image_size"]
    selected = np.frombuffer((gimp_segment["out"] / "select.selected.raw").read_bytes(),
                             np.uint8).reshape(ih, iw)  # fmt: skip
    expected = np.zeros((ih, iw), np.uint8)
    window = np.ascontiguousarray(layer[y0:y1, x0:x1])
    expected[y0:y1, x0:x1] = expected_selection(gimp_segment, window, "RGBA8", box)
    np.testing.assert_array_equal(selected, expected)
    assert s["channels_added"] == 0 and s["layers_after"] == s["layers_before"]


def test_gimp_remove_with_select_first_fills_the_object_mask(gimp_segment, tiny_model_dir):
    s, layer, (x0, y0, x1, y1), box = _gimp_window(gimp_segment, "select_first")
    assert s["status"] == "success", s
    window = np.ascontiguousarray(layer[y0:y1, x0:x1])
    mask = expected_selection(gimp_segment, window, "RGBA8", box, grow=0)  # grown once, there
    got = (gimp_segment["out"] / "select_first.new.raw").read_bytes()
    assert got == expected_layer(tiny_model_dir, window, mask, "RGBA8")
