"""The GIMP 3 plug-in inside real GIMP 3.0 (Debian trixie chroot, gimp-console batch mode),
against a real lama-server running outside the chroot.

Without the chroot these tests are skipped loudly, or fail when REQUIRE_HOSTS=1 (CI builds
it with tests/hosts/setup_gimp.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, host_missing, start_server

from lama_model.backends import load_for_inference
from lama_model.inpaint import InpaintOptions, inpaint
from lama_server.pixel_formats import array_to_wire, wire_to_array
from lama_server.plugin_install import install_plugin
from lama_server.worker import layer_pixels

pytestmark = pytest.mark.hosts
ROOT = Path(os.environ.get("GIMP_CHROOT", "/var/tmp/lama-gimp3-trixie"))
LAYERED = ["rgba8", "rgba16", "group_offset", "refine"]


def _require_chroot() -> None:
    if not (ROOT / ".lama-gimp3-ready").is_file() or os.geteuid() != 0:
        host_missing(f"no GIMP 3 chroot at {ROOT} (bash tests/hosts/setup_gimp.sh, as root)")


@pytest.fixture(scope="module")
def gimp_session(tmp_path_factory, tiny_model_dir, golden_dir):
    _require_chroot()
    # Pinned: `auto` measures, and the test process must run the same path as the server.
    server = start_server(tmp_path_factory.mktemp("gimp-server"), tiny_model_dir, "--precision", "fp32")
    home, data, out = ROOT / "lama-home", ROOT / "lama-data", ROOT / "lama-out"
    for d in (home, data, out):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    install_plugin("gimp", home / ".config" / "GIMP" / "3.0" / "plug-ins")
    shutil.copy(golden_dir / "case-b" / "image.png", data / "photo.png")
    shutil.copy(REPO / "tests" / "hosts" / "gimp" / "gimp_driver.py", data / "driver.py")
    plan = {
        "out": "/lama-out",
        "scenarios": [
            {"name": "rgba8", "image": "/lama-data/photo.png", "endpoint": server.endpoint, "selection": [96, 80, 48, 40], "export": "/lama-out/gimp-result.png"},
            {"name": "rgba16", "image": "/lama-data/photo.png", "endpoint": server.endpoint, "depth": "u16", "selection": [40, 150, 30, 50], "mask_grow": 2, "feather": 6},
            {"name": "group_offset", "image": "/lama-data/photo.png", "endpoint": server.endpoint, "group_offset": [30, 20], "selection": [150, 110, 40, 30], "margin": 40},
            {"name": "refine", "image": "/lama-data/photo.png", "endpoint": server.endpoint, "selection": [96, 80, 48, 40], "refine": True},
            {"name": "server_down", "image": "/lama-data/photo.png", "endpoint": "tcp://127.0.0.1:9", "selection": [96, 80, 48, 40]},
        ],
    }  # fmt: skip
    (data / "plan.json").write_text(json.dumps(plan))
    env = ["/usr/bin/env", "-i", "HOME=/lama-home", "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
           "LAMA_TEST_PLAN=/lama-data/plan.json", f"LAMA_TOKEN={server.token}"]  # fmt: skip
    cmd = ["timeout", "-k", "5", "240", "chroot", str(ROOT), *env, "gimp-console-3.0", "-i",
           "--batch-interpreter=python-fu-eval", "-b", 'exec(open("/lama-data/driver.py").read())',
           "--quit"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=260)
    server.stop()
    result_file = out / "result.json"
    assert result_file.is_file(), f"GIMP wrote no result (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    scenarios = {s["name"]: s for s in json.loads(result_file.read_text())["scenarios"]}
    if os.environ.get("LAMA_UPDATE_SCREENSHOTS") == "1" and (out / "gimp-result.png").is_file():
        shutil.copy(out / "gimp-result.png", REPO / "docs" / "img" / "gimp-result.png")
    return {"out": out, "scenarios": scenarios, "log": proc.stdout + proc.stderr,
            "server_log": server.log()}  # fmt: skip


def _scenario(session, name):
    s = session["scenarios"].get(name)
    assert s is not None, session["log"][-3000:]
    assert s["ok"], s.get("error")
    return s


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
    fmt = {"u8": "RGBA8", "u16": "RGBA16"}[s["spec"].get("depth", "u8")]
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
    spec = s["spec"]
    options = InpaintOptions(mask_grow=spec.get("mask_grow", 4), feather=spec.get("feather", 4),
                             refine=spec.get("refine", False))  # fmt: skip
    if spec.get("refine"):  # the plug-in asked for refinement and the server ran it
        assert "refine=True" in gimp_session["server_log"]
    # The model as the server runs it (fused path), so the bytes must match exactly.
    result = inpaint(load_for_inference(tiny_model_dir, torch.device("cpu"), "fp32"), np.ascontiguousarray(window), np.ascontiguousarray(mask), options)
    expected = array_to_wire(fmt, layer_pixels(result.image, result.alpha, fmt))
    got = (out / f"{name}.new.raw").read_bytes()
    assert got == expected
    layer = wire_to_array(fmt, w, h, got)
    assert (layer[result.alpha == 0] == 0).all() and (layer[result.alpha == 1][:, 3] > 0).all()


def test_server_down_is_an_error_status_and_the_image_is_unchanged(gimp_session):
    s = _scenario(gimp_session, "server_down")
    assert s["status"] == "execution-error"
    assert s["layers_after"] == s["layers_before"] and "LaMa: removed" not in s["siblings"]
    assert s["source_unchanged"] is True
