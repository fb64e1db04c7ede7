"""The Krita plugin's host-neutral core, driven with fake host objects (no Krita needed)."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
from conftest import REPO

import lama_client

# Installed, core.py sits in the plug-in package beside the bundled lama_client; the package's
# __init__ needs Krita, so the test builds that package around core.py and the real client.
_PLUGIN = REPO / "plugins" / "krita" / "lama_inpaint"
_package = types.ModuleType("lama_krita_plugin")
_package.__path__ = [str(_PLUGIN)]
_package.lama_client = lama_client
sys.modules["lama_krita_plugin"] = _package
sys.modules["lama_krita_plugin.lama_client"] = lama_client
_spec = importlib.util.spec_from_file_location("lama_krita_plugin.core", _PLUGIN / "core.py")
core = importlib.util.module_from_spec(_spec)
sys.modules["lama_krita_plugin.core"] = core
_spec.loader.exec_module(core)


class FakeSelection:
    def __init__(self, x, y, w, h, value=255):
        self.box = (x, y, w, h)
        self.value = value

    def x(self):
        return self.box[0]

    def y(self):
        return self.box[1]

    def width(self):
        return self.box[2]

    def height(self):
        return self.box[3]

    def pixelData(self, x, y, w, h):  # noqa: N802 - Krita's name
        sx, sy, sw, sh = self.box
        return bytes(self.value if sx <= x + i % w < sx + sw and sy <= y + i // w < sy + sh else 0
                     for i in range(w * h))  # fmt: skip


class FakeNode:
    def __init__(self, name="Background", kind="paintlayer", model="RGBA", depth="U8", parent=None):
        self._name, self.kind, self.model, self.depth = name, kind, model, depth
        self.parent = parent
        self.children: list[FakeNode] = []
        self.written = None
        self.reads = []

    def name(self):
        return self._name

    def type(self):
        return self.kind

    def colorModel(self):  # noqa: N802
        return self.model

    def colorDepth(self):  # noqa: N802
        return self.depth

    def colorProfile(self):  # noqa: N802
        return "sRGB-elle-V2-srgbtrc.icc"

    def setColorSpace(self, model, depth, profile):  # noqa: N802
        self.model, self.depth = model, depth

    def pixelData(self, x, y, w, h):  # noqa: N802
        self.reads.append((x, y, w, h))
        bpp = {"U8": 4, "U16": 8, "F32": 16}.get(self.depth, 4)
        return bytes(w * h * bpp)

    def parentNode(self):  # noqa: N802
        return self.parent

    def addChildNode(self, node, above):  # noqa: N802
        node.parent = self
        index = self.children.index(above) + 1 if above in self.children else len(self.children)
        self.children.insert(index, node)

    def setPixelData(self, data, x, y, w, h):  # noqa: N802
        self.written = (bytes(data), x, y, w, h)


class FakeDoc:
    def __init__(self, w=1000, h=800, selection=None, model="RGBA", depth="U8"):
        self.size = (w, h)
        self.sel = selection
        self.root = FakeNode("root", kind="grouplayer")
        self.layer = FakeNode(parent=self.root, model=model, depth=depth)
        self.root.children.append(self.layer)
        self.model, self.depth = model, depth

    def selection(self):
        return self.sel

    def width(self):
        return self.size[0]

    def height(self):
        return self.size[1]

    def rootNode(self):  # noqa: N802
        return self.root

    def createNode(self, name, kind):  # noqa: N802
        return FakeNode(name, kind)

    def colorModel(self):  # noqa: N802
        return self.model

    def colorDepth(self):  # noqa: N802
        return self.depth

    def colorProfile(self):  # noqa: N802
        return ""

    def pixelData(self, x, y, w, h):  # noqa: N802
        return bytes(w * h * 4)

    def nodeByName(self, name):  # noqa: N802
        return getattr(self, "named", {}).get(name)


def test_window_is_selection_plus_auto_margin_clamped_to_the_image():
    bounds = core.Rect(0, 0, 1000, 800)
    assert core.context_window(core.Rect(500, 400, 40, 30), bounds) == core.Rect(372, 272, 296, 286)
    big = core.context_window(core.Rect(100, 100, 600, 400), bounds)
    assert big == core.Rect(0, 0, 1000, 800)  # margin = 300, clamped
    assert core.context_window(core.Rect(10, 10, 5, 5), bounds, margin=20) == core.Rect(0, 0, 35, 35)


@pytest.mark.parametrize(("model", "depth", "fmt"), [("RGBA", "U8", "BGRA8"), ("RGBA", "U16", "BGRA16"), ("RGBA", "F32", "RGBAF32")])
def test_krita_layouts_map_to_wire_formats(model, depth, fmt):
    assert core.wire_format(model, depth) == fmt


@pytest.mark.parametrize(("model", "depth", "hint"), [("RGBA", "F16", "32-bit float"), ("CMYKA", "U8", "RGB/Alpha"), ("GRAYA", "U8", "RGB/Alpha")])
def test_other_colour_spaces_get_a_clear_message(model, depth, hint):
    with pytest.raises(core.PluginError) as info:
        core.wire_format(model, depth)
    assert info.value.title == "Unsupported colour space" and hint in info.value.text


def test_prepare_reads_the_window_of_the_layer_and_the_selection():
    doc = FakeDoc(selection=FakeSelection(500, 400, 40, 30, value=180))
    job = core.prepare(doc, doc.layer, core.Settings(mask_grow=3, feather=5))
    assert job.window == core.Rect(372, 272, 296, 286) and job.format == "BGRA8"
    assert doc.layer.reads == [(372, 272, 296, 286)]
    assert len(job.pixels) == 296 * 286 * 4 and len(job.mask) == 296 * 286
    assert set(job.mask) == {0, 180}  # soft selection values travel as they are
    assert job.options == {"mask_grow": 3, "feather": 5, "output": "layer"}


def test_prepare_visible_image_reads_the_document():
    doc = FakeDoc(selection=FakeSelection(10, 10, 20, 20))
    job = core.prepare(doc, None, core.Settings(visible=True))
    assert job.format == "BGRA8" and doc.layer.reads == []


@pytest.mark.parametrize(
    ("doc", "node", "title"),
    [
        (None, None, "No image"),
        (FakeDoc(selection=None), "layer", "Nothing selected"),
        (FakeDoc(selection=FakeSelection(0, 0, 0, 0)), "layer", "Nothing selected"),
        (FakeDoc(selection=FakeSelection(10, 10, 20, 20)), FakeNode(kind="vectorlayer"), "Not a paint layer"),
        (FakeDoc(selection=FakeSelection(10, 10, 20, 20), depth="F16"), "layer", "Unsupported colour space"),
    ],
)  # fmt: skip
def test_prepare_refuses_with_a_message(doc, node, title):
    if node == "layer":
        node = doc.layer
    with pytest.raises(core.PluginError) as info:
        core.prepare(doc, node, core.Settings())
    assert info.value.title == title


def test_result_lands_directly_above_the_source_in_its_colour_space():
    doc = FakeDoc(selection=FakeSelection(10, 10, 20, 20), depth="U16")
    top = FakeNode("Top", parent=doc.root)
    doc.root.children.append(top)
    job = core.Job(core.Rect(5, 6, 7, 8), "BGRA16", b"", b"", {})
    layer = core.apply_result(doc, doc.layer, job, b"x" * (7 * 8 * 8))
    assert [n.name() for n in doc.root.children] == ["Background", "LaMa: removed", "Top"]
    assert layer.written[1:] == (5, 6, 7, 8) and layer.depth == "U16"


def test_settings_round_trip_and_bad_values_fall_back():
    stored = {}
    core.Settings("tcp://10.0.0.2:6000", 7, 9, 64, True).save(stored.__setitem__)
    loaded = core.Settings.load(lambda k, d: stored.get(k, d))
    assert loaded == core.Settings("tcp://10.0.0.2:6000", 7, 9, 64, True)
    junk = {"endpoint": "http://x", "mask_grow": "-3", "feather": "lots", "margin": "99999"}
    assert core.Settings.load(lambda k, d: junk.get(k, d)) == core.Settings()


class _Err(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


@pytest.mark.parametrize(
    ("code", "title"),
    [("unavailable", "LaMa server is not running"), ("timeout", "LaMa server timed out"),
     ("busy", "LaMa server is busy"), ("unauthorized", "LaMa server refused the request"),
     ("too_large", "Selection too large"), ("internal", "LaMa inpainting failed"),
     ("old_server", "LaMa server is too old")],
)  # fmt: skip
def test_client_errors_become_friendly_messages(code, title):
    problem = core.explain(_Err(code, "no lama-server at tcp://x:1. Start it with: lama-server"))
    assert problem.title == title
    if code == "unavailable":
        assert problem.text.count("lama-server") == 2 and "Start it in a terminal" in problem.text


def test_core_imports_nothing_outside_the_standard_library():
    import ast

    tree = ast.parse((REPO / "plugins" / "krita" / "lama_inpaint" / "core.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "dataclasses"}


class RecordingSegmentClient:
    """Answers ``segment`` with a fixed mask and keeps what it was asked (the real client and
    server are exercised in tests/test_segment_server.py and the host tests)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.asked: list[tuple] = []

    def segment(self, image, box=None, points=(), labels=(), progress=None, cancel=None):
        self.asked.append((image.width, image.height, image.format, box))
        return self.answer


class FakeKritaSelection:
    def __init__(self):
        self.written = None

    def setPixelData(self, data, x, y, w, h):  # noqa: N802 - Krita's name
        self.written = (bytes(data), x, y, w, h)


def test_select_object_prompts_with_the_selection_box_and_grows_the_answer():
    doc = FakeDoc(selection=FakeSelection(500, 400, 40, 30))
    job = core.prepare(doc, doc.layer, core.Settings())
    w, h = job.window.w, job.window.h
    answer = bytearray(w * h)
    answer[150 * w + 140] = 255  # one pixel of "object" at window (140, 150)
    client = RecordingSegmentClient(bytes(answer))
    mask = core.object_mask(client, job, 2)
    # The selection (500, 400, 40×30) is at (128, 128) in the window (372, 272).
    assert client.asked == [(w, h, "BGRA8", (128, 128, 168, 158))]
    assert mask == lama_client.host_kit.grow_mask(bytes(answer), w, h, 2)
    assert sum(v == 255 for v in mask) == 21  # the radius-2 octagon: 5×5 less its 4 corners


def test_select_object_with_no_object_found_says_so():
    doc = FakeDoc(selection=FakeSelection(500, 400, 40, 30))
    job = core.prepare(doc, doc.layer, core.Settings())
    client = RecordingSegmentClient(bytes(job.window.w * job.window.h))
    with pytest.raises(core.PluginError) as info:
        core.object_mask(client, job, 0)
    assert info.value.title == "No object found"


def test_the_object_mask_replaces_the_selection_in_the_window():
    doc = FakeDoc(selection=FakeSelection(10, 10, 20, 20))
    doc.setSelection = lambda selection: setattr(doc, "sel", selection)
    job = core.Job(core.Rect(5, 6, 7, 8), "BGRA8", b"", b"", {})
    core.apply_selection(doc, job, b"\xff" * 56, FakeKritaSelection)
    assert doc.sel.written == (b"\xff" * 56, 5, 6, 7, 8)


def test_select_first_setting_round_trips():
    stored = {}
    core.Settings(select_first=True).save(stored.__setitem__)
    assert core.Settings.load(lambda k, d: stored.get(k, d)).select_first is True
    assert core.Settings.load(lambda k, d: d).select_first is False


@pytest.mark.parametrize(("key", "sent"), [("full", None), ("faster", 768), ("fastest", 512)])
def test_processing_size_round_trips_and_sets_the_requests_resize_limit(key, sent):
    stored = {}
    core.Settings(processing_size=key).save(stored.__setitem__)
    loaded = core.Settings.load(lambda k, d: stored.get(k, d))
    assert stored["processing_size"] == key and loaded.processing_size == key
    # "Full" sends nothing: the server's default, and servers before protocol 1.6 keep working.
    assert loaded.request_options().get("resize_limit") == sent
    assert ("resize_limit" in loaded.request_options()) == (sent is not None)


def test_unknown_stored_processing_size_is_the_default():
    loaded = core.Settings.load(lambda k, d: "enormous" if k == "processing_size" else d)
    assert loaded.processing_size == "full" and "resize_limit" not in loaded.request_options()
    assert core.Settings.load(lambda k, d: d).processing_size == "full"


class DotsLayer(FakeNode):
    """A "lama points" paint layer (BGRA8) with square dots: (x, y, size, (b, g, r))."""

    def __init__(self, dots, w=1000, h=800):
        super().__init__(core.POINTS_LAYER)
        self.pixels = bytearray(w * h * 4)
        self.w = w
        for x, y, size, colour in dots:
            for yy in range(y, y + size):
                for xx in range(x, x + size):
                    self.pixels[(yy * w + xx) * 4 : (yy * w + xx + 1) * 4] = bytes((*colour, 255))

    def pixelData(self, x, y, w, h):  # noqa: N802
        return b"".join(self.pixels[((y + r) * self.w + x) * 4 : ((y + r) * self.w + x + w) * 4]
                        for r in range(h))  # fmt: skip


def test_dots_on_the_points_layer_become_labelled_points_in_window_pixels():
    doc = FakeDoc(selection=FakeSelection(500, 400, 40, 30))
    green, red = (40, 200, 30), (30, 30, 220)  # BGRA order
    doc.named = {core.POINTS_LAYER: DotsLayer([(510, 410, 3, green), (530, 420, 2, red),
                                                (5, 5, 3, green)])}  # the last: outside the window
    job = core.prepare(doc, doc.layer, core.Settings())
    # The window starts at (372, 272): the 3×3 dot on 510..512 covers window pixels 138..140,
    # whose centre is 139.5 (pixel centres at +0.5); the red 2×2 dot's is 159.0, 149.0.
    assert dict(zip(job.points, job.labels, strict=True)) == {(139.5, 139.5): 1, (159.0, 149.0): 0}
    assert job.points == ((139.5, 139.5), (159.0, 149.0))  # top to bottom
    client = RecordingSegmentClient(b"\xff" * (job.window.w * job.window.h))
    client.segment = lambda image, **prompt: client.asked.append(prompt) or client.answer
    core.object_mask(client, job, 0)
    assert client.asked[0]["points"] == job.points and client.asked[0]["labels"] == job.labels


def test_without_a_points_layer_the_box_is_the_only_prompt():
    doc = FakeDoc(selection=FakeSelection(500, 400, 40, 30))
    job = core.prepare(doc, doc.layer, core.Settings())
    assert job.points == () and job.labels == ()
