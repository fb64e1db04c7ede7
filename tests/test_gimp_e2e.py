"""The GIMP 3 plug-in inside real GIMP 3.0 (Debian trixie) and GIMP 3.2 (Debian sid), each in a
chroot in gimp-console batch mode, against a real lama-server running outside the chroot.

The plug-in gets there as a user's would: the user has started that GIMP once, then runs
``lama-server install-plugin gimp`` with no flags and HOME at the chroot user's home. Without a
chroot these tests are skipped loudly, or fail when REQUIRE_HOSTS=1 (CI builds them with
tests/hosts/setup_gimp.sh and setup_sid.sh).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO, host_missing, start_server
from hosts.real_hosts import GIMP_HOSTS

from lama_client import host_kit
from lama_model.factory import load_for_inference
from lama_model.pipeline import InpaintOptions, inpaint
from lama_server.wire.pixel_formats import array_to_wire, wire_to_array
from lama_server.wire.replies import layer_pixels

pytestmark = pytest.mark.hosts
# Served and compared at the same explicit precision, so equal bytes are the right test.
PRECISION = "fp32"
LAYERED = ["rgba8", "rgba16", "float", "feathered", "group_offset", "refine"]
NEWEST = GIMP_HOSTS[-1]
WORK, HOME = "/lama-e2e-gimp", "/home/lama-gimp"


@pytest.fixture(scope="module", params=GIMP_HOSTS, ids=lambda host: host.id)
def gimp_session(request, tmp_path_factory, tiny_model_dir, golden_dir):
    host = request.param
    if host.missing():
        host_missing(host.missing())
    console = f"gimp-console-{host.series}"
    work = host.fresh_dir(WORK)
    host.fresh_dir(HOME)
    # A user who has run this GIMP once: it made its GIMP/<series> folder, which the installer
    # finds (it would not create the folder of a GIMP never started).
    first = host.run([console, "-i", "--quit"], {"HOME": HOME}, 120)
    assert first.returncode == 0, first.stderr[-2000:]
    installed = host.install_plugin(HOME)
    server = start_server(tmp_path_factory.mktemp("gimp-server"), tiny_model_dir, "--precision", PRECISION)  # fmt: skip
    shutil.copy(golden_dir / "case-b" / "image.png", work / "photo.png")
    shutil.copy(REPO / "tests" / "hosts" / "gimp" / "gimp_driver.py", work / "driver.py")
    photo, live = f"{WORK}/photo.png", server.endpoint
    plan = {
        "out": WORK,
        "scenarios": [
            {"name": "rgba8", "image": photo, "endpoint": live, "selection": [96, 80, 48, 40], "export": f"{WORK}/gimp-result.png"},
            {"name": "rgba16", "image": photo, "endpoint": live, "depth": "u16", "selection": [40, 150, 30, 50], "mask_grow": 2, "feather": 6},
            {"name": "float", "image": photo, "endpoint": live, "depth": "f32", "selection": [120, 40, 40, 36]},
            {"name": "feathered", "image": photo, "endpoint": live, "selection": [70, 100, 50, 40], "feather_selection": 12},
            {"name": "group_offset", "image": photo, "endpoint": live, "group_offset": [30, 20], "selection": [150, 110, 40, 30], "margin": 40, "processing_size": "fastest"},
            {"name": "refine", "image": photo, "endpoint": live, "selection": [96, 80, 48, 40], "refine": True},
            {"name": "server_down", "image": photo, "endpoint": "tcp://127.0.0.1:9", "selection": [96, 80, 48, 40]},
        ],
    }  # fmt: skip
    (work / "plan.json").write_text(json.dumps(plan))
    env = {"HOME": HOME, "LAMA_TEST_PLAN": f"{WORK}/plan.json", "LAMA_TOKEN": server.token}
    cmd = [console, "-i", "--batch-interpreter=python-fu-eval", "-b", f'exec(open("{WORK}/driver.py").read())', "--quit"]  # fmt: skip
    proc = host.run(cmd, env, 240)
    server.stop()
    result_file = work / "result.json"
    assert result_file.is_file(), f"GIMP wrote no result (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"  # fmt: skip
    result = json.loads(result_file.read_text())
    scenarios = {s["name"]: s for s in result["scenarios"]}
    if os.environ.get("LAMA_UPDATE_SCREENSHOTS") == "1" and host == NEWEST:
        shutil.copy(work / "gimp-result.png", REPO / "docs" / "img" / "gimp-result.png")
    return {"host": host, "installed": installed, "out": work, "scenarios": scenarios,
            "version": result["gimp_version"], "log": proc.stdout + proc.stderr,
            "processing_size": result.get("processing_size"),
            "server_log": server.log()}  # fmt: skip


def test_it_is_the_gimp_version_named(gimp_session):
    assert gimp_session["version"].startswith(gimp_session["host"].series + ".")


def _scenario(session, name):
    s = session["scenarios"].get(name)
    assert s is not None, session["log"][-3000:]
    assert s["ok"], s.get("error")
    return s


def test_install_plugin_without_flags_reaches_this_gimp(gimp_session):
    """`lama-server install-plugin gimp` (no --dest, no --gimp-version) put the plug-in where
    this GIMP series reads it, and GIMP registered its procedure (else no scenario ran)."""
    host = gimp_session["host"]
    target = host.outside(HOME) / ".config" / "GIMP" / host.series / "plug-ins" / "lama_inpaint"
    assert f"in {target} (GIMP {host.series})" in gimp_session["installed"]
    assert (target / "lama_inpaint.py").is_file()
    assert _scenario(gimp_session, "rgba8")["status"] == "success"


@pytest.mark.parametrize("name", LAYERED)
def test_new_layer_lands_directly_above_the_drawable(gimp_session, name):
    s = _scenario(gimp_session, name)
    assert s["status"] == "success", s
    siblings = s["siblings"]  # top to bottom
    assert siblings.index("LaMa: removed") == siblings.index(s["target"]) - 1
    assert s["new_has_alpha"] is True


@pytest.mark.parametrize("name", LAYERED)
def test_source_is_unchanged(gimp_session, name):
    assert _scenario(gimp_session, name)["source_unchanged"] is True


@pytest.mark.parametrize("name", LAYERED)
def test_layer_equals_lama_inside_and_is_transparent_outside(gimp_session, tiny_model_dir, name):
    s = _scenario(gimp_session, name)
    fmt = {"u8": "RGBA8", "u16": "RGBA16", "f32": "RGBAF32"}[s["spec"].get("depth", "u8")]
    out = gimp_session["out"]
    nx, ny = s["new_offsets"]
    w, h = s["new_size"]
    tx, ty = s["target_offsets"]
    tw, th = s["target_size"]
    iw, ih = s["image_size"]
    # The window lies inside the drawable (the plug-in clamps it there).
    assert tx <= nx and ty <= ny and nx + w <= tx + tw and ny + h <= ty + th
    source = wire_to_array(fmt, tw, th, (out / f"{name}.source.raw").read_bytes())
    window = source[ny - ty : ny - ty + h, nx - tx : nx - tx + w]
    mask_full = np.frombuffer((out / f"{name}.mask.raw").read_bytes(), np.uint8).reshape(ih, iw)
    mask = mask_full[ny : ny + h, nx : nx + w]
    if s["spec"].get("feather_selection"):  # the soft edge itself reached the server
        assert ((mask > 0) & (mask < 255)).any()
    spec = s["spec"]
    size = host_kit.processing_size(spec.get("processing_size", "full"))
    options = InpaintOptions(mask_grow=spec.get("mask_grow", 4), feather=spec.get("feather", 4),
                             refine=spec.get("refine", False),
                             resize_limit=size.resize_limit or host_kit.SERVER_RESIZE_LIMIT)  # fmt: skip
    if spec.get("refine"):  # the plug-in asked for refinement and the server ran it
        assert "refine=True" in gimp_session["server_log"]
    if size.resize_limit:  # the plug-in's processing size reached the server
        assert f"resize_limit={size.resize_limit} " in gimp_session["server_log"]
    model = load_for_inference(tiny_model_dir, torch.device("cpu"), PRECISION)
    result = inpaint(model, np.ascontiguousarray(window), np.ascontiguousarray(mask), options)
    expected = array_to_wire(fmt, layer_pixels(result.image, result.alpha, fmt))
    got = (out / f"{name}.new.raw").read_bytes()
    assert got == expected
    layer = wire_to_array(fmt, w, h, got)
    assert (layer[result.alpha == 0] == 0).all() and (layer[result.alpha == 1][:, 3] > 0).all()


def test_the_processing_size_argument_offers_the_plugins_shared_choices(gimp_session):
    """GIMP's procedure shows the same words as Krita's settings (host_kit), Full first and
    by default, so the procedure dialog and scripts see one list."""
    shown = gimp_session["processing_size"]
    assert shown is not None and "error" not in shown, shown
    sizes = host_kit.PROCESSING_SIZES
    assert shown["label"] == host_kit.PROCESSING_SIZE_LABEL
    assert shown["help"] == host_kit.PROCESSING_SIZE_HELP
    assert shown["choices"] == [[s.key, s.label] for s in sizes]
    assert shown["default"] == host_kit.DEFAULT_PROCESSING_SIZE == sizes[0].key


def test_server_down_is_an_error_status_and_the_image_is_unchanged(gimp_session):
    s = _scenario(gimp_session, "server_down")
    assert s["status"] == "execution-error"
    assert "lama-server" in s.get("error_value", "")
    assert s["layers_after"] == s["layers_before"] and "LaMa: removed" not in s["siblings"]
    assert s["source_unchanged"] is True
