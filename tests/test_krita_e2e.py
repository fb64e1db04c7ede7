"""The Krita plugin inside real Krita (Debian's package, under Xvfb), against a real lama-server.

One Krita launch runs every scenario through the test-driver plugin (tests/hosts/krita); the
checks below read what it dumped. Without Krita installed these tests are skipped loudly, or
fail when REQUIRE_HOSTS=1 (CI sets up Krita with tests/hosts/setup_krita.sh).
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
HOSTS = REPO / "tests" / "hosts" / "krita"
LAYERED = ["rgba8", "rgba16", "group_offset", "refine"]


def _require_krita() -> None:
    missing = [tool for tool in ("krita", "xvfb-run") if shutil.which(tool) is None]
    if missing:
        host_missing(f"{', '.join(missing)} not installed (bash tests/hosts/setup_krita.sh)")


@pytest.fixture(scope="module")
def krita_session(tmp_path_factory, tiny_model_dir, golden_dir):
    _require_krita()
    tmp = tmp_path_factory.mktemp("krita")
    # Pinned: `auto` measures, and the test process must run the same path as the server.
    server = start_server(tmp, tiny_model_dir, "--precision", "fp32")
    home = tmp / "home"
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    install_plugin("krita", pykrita)
    shutil.copytree(HOSTS / "lama_testdriver", pykrita / "lama_testdriver")
    shutil.copy(HOSTS / "lama_testdriver.desktop", pykrita)
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "kritarc").write_text(
        "[python]\nenable_lama_inpaint=true\nenable_lama_testdriver=true\n"
    )
    out = tmp / "out"
    out.mkdir()
    image = str(golden_dir / "case-b" / "image.png")
    dead = "tcp://127.0.0.1:9"  # nothing listens there
    shot = str(out / "krita-result.png")
    plan = {
        "out": str(out),
        "watchdog_ms": 150000,
        "scenarios": [
            {"name": "rgba8", "image": image, "endpoint": server.endpoint, "selection": [96, 80, 48, 40], "screenshot": shot},
            {"name": "rgba16", "image": image, "endpoint": server.endpoint, "depth": "U16", "selection": [40, 150, 30, 50], "mask_grow": 2, "feather": 6},
            {"name": "group_offset", "image": image, "endpoint": server.endpoint, "group_offset": [30, 20], "selection": [150, 110, 40, 30], "margin": 40},
            {"name": "refine", "image": image, "endpoint": server.endpoint, "selection": [96, 80, 48, 40], "refine": True},
            {"name": "server_down", "image": image, "endpoint": dead, "selection": [96, 80, 48, 40]},
        ],
    }  # fmt: skip
    (tmp / "plan.json").write_text(json.dumps(plan))
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(tmp), LAMA_TEST_PLAN=str(tmp / "plan.json"),
               LAMA_TOKEN_FILE=str(server.token_file),
               # Krita embeds the system Python: a pyenv/venv python3 first on PATH would
               # make it pick that prefix and miss Debian's PyQt5.
               PATH="/usr/bin:/bin:" + os.environ.get("PATH", ""))  # fmt: skip
    env.pop("LAMA_TOKEN", None)
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", "timeout", "-k", "5", "180", "krita", "--nosplash"],
        env=env, capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    server.stop()
    result_file = out / "result.json"
    assert result_file.is_file(), (
        f"Krita wrote no result (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    result = json.loads(result_file.read_text())
    assert "scenarios" in result, result
    if os.environ.get("LAMA_UPDATE_SCREENSHOTS") == "1" and Path(shot).is_file():
        shutil.copy(shot, REPO / "docs" / "img" / "krita-result.png")
    scenarios = {s["name"]: s for s in result["scenarios"]}
    return {"out": out, "scenarios": scenarios, "log": proc.stdout + proc.stderr,
            "server_log": server.log()}  # fmt: skip


def _scenario(session, name):
    scenario = session["scenarios"].get(name)
    assert scenario is not None, f"scenario {name} did not run:\n{session['log'][-3000:]}"
    assert scenario["ok"], scenario.get("error") or scenario
    return scenario


def _raw(session, name, label) -> bytes:
    return (session["out"] / f"{name}.{label}.raw").read_bytes()


@pytest.mark.parametrize("name", LAYERED)
def test_new_layer_lands_directly_above_the_source(krita_session, name):
    s = _scenario(krita_session, name)
    assert s["action_text"] == "Remove object"
    siblings = s["siblings"]  # bottom to top
    assert siblings.index("LaMa: removed") == siblings.index(s["active_node"]) + 1
    if name == "group_offset":
        assert s["new_parent"] == "Group" and s["layer_position"] == [30, 20]


@pytest.mark.parametrize("name", LAYERED)
def test_source_layer_is_unchanged(krita_session, name):
    assert _scenario(krita_session, name)["source_unchanged"] is True


@pytest.mark.parametrize("name", LAYERED)
def test_layer_equals_lama_inside_and_is_transparent_outside(krita_session, tiny_model_dir, name):
    s = _scenario(krita_session, name)
    fmt = {"U8": "BGRA8", "U16": "BGRA16"}[s["color"][1]]
    x, y, w, h = s["window"]
    source = wire_to_array(fmt, w, h, _raw(krita_session, name, "source_window"))
    mask = np.frombuffer(_raw(krita_session, name, "mask_window"), np.uint8).reshape(h, w)
    spec = s["spec"]
    options = InpaintOptions(mask_grow=spec.get("mask_grow", 4), feather=spec.get("feather", 4),
                             refine=spec.get("refine", False))  # fmt: skip
    if spec.get("refine"):  # the plug-in asked for refinement and the server ran it
        assert "refine=True" in krita_session["server_log"]
    # The model as the server runs it (fused path), so the bytes must match exactly.
    result = inpaint(load_for_inference(tiny_model_dir, torch.device("cpu"), "fp32"), source, mask, options)
    expected = array_to_wire(fmt, layer_pixels(result.image, result.alpha, fmt))
    got = _raw(krita_session, name, "new_window")
    assert got == expected
    # Nothing outside the window; inside it, fully transparent wherever nothing was filled.
    nx, ny, nw, nh = s["new_bounds"]
    assert x <= nx and y <= ny and nx + nw <= x + w and ny + nh <= y + h
    layer = wire_to_array(fmt, w, h, got)
    assert (layer[result.alpha == 0] == 0).all() and (layer[result.alpha == 1][:, 3] > 0).all()


def test_server_down_shows_a_message_and_adds_nothing(krita_session):
    s = _scenario(krita_session, "server_down")
    message = s["message"]
    assert message["title"] == "LaMa server is not running"
    assert "lama-server" in message["text"]
    assert "LaMa: removed" not in s["siblings"]
    assert s["source_unchanged"] is True and s["responsive"] is True


def test_screenshot_was_taken(krita_session):
    shot = krita_session["out"] / "krita-result.png"
    assert shot.is_file() and shot.stat().st_size > 10_000
