"""The Krita plugin inside real Krita, under Xvfb, against a real lama-server: Krita 5.1 (this
machine's Debian 12 package), Krita 5.3 (Debian sid chroot) and Krita 6.0 (Qt6/PyQt6, Debian
experimental chroot).

The plugin gets there as a user's would: ``lama-server install-plugin krita`` with no flags and
HOME at that Krita user's home (it also enables the plugin in kritarc). One Krita launch per
version runs every scenario through the test-driver plugin (tests/hosts/krita); the checks below
read what it dumped. A missing host is skipped loudly, or fails when REQUIRE_HOSTS=1 (CI sets
them up with tests/hosts/setup_krita.sh, setup_sid.sh and setup_experimental.sh).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO, host_missing, start_server
from hosts.real_hosts import KRITA_HOSTS, free_display

from lama_client import host_kit
from lama_model.factory import load_for_inference
from lama_model.pipeline import InpaintOptions, inpaint
from lama_server.commands.plugins import enable_in_kritarc
from lama_server.wire.pixel_formats import array_to_wire, wire_to_array
from lama_server.wire.replies import layer_pixels

pytestmark = pytest.mark.hosts
DRIVER = REPO / "tests" / "hosts" / "krita"
# Served and compared at the same explicit precision, so equal bytes are the right test.
PRECISION = "fp32"
LAYERED = ["rgba8", "rgba16", "float", "feathered", "group_offset", "refine"]
NEWEST = KRITA_HOSTS[-1]


@pytest.fixture(scope="module", params=KRITA_HOSTS, ids=lambda host: host.id)
def krita_session(request, tmp_path_factory, tiny_model_dir, golden_dir):
    host = request.param
    if host.missing():
        host_missing(host.missing())
    tmp = tmp_path_factory.mktemp(host.id)
    # In a chroot, folders inside it; on this machine, pytest's temporary folder.
    work_in, home_in = ("/lama-e2e-krita", "/home/lama-krita") if host.root else (str(tmp / "work"), str(tmp / "home"))  # fmt: skip
    work, home = host.fresh_dir(work_in), host.fresh_dir(home_in)
    installed = host.install_plugin(home_in)
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    shutil.copytree(DRIVER / "lama_testdriver", pykrita / "lama_testdriver")
    shutil.copy(DRIVER / "lama_testdriver.desktop", pykrita)
    enable_in_kritarc(home / ".config" / "kritarc", "lama_testdriver")
    server = start_server(tmp, tiny_model_dir, "--precision", PRECISION)
    shutil.copy(golden_dir / "case-b" / "image.png", work / "photo.png")
    image, live, dead = f"{work_in}/photo.png", server.endpoint, "tcp://127.0.0.1:9"
    shot = f"{work_in}/krita-result.png"
    plan = {
        "out": work_in,
        "watchdog_ms": 150000,
        "scenarios": [
            {"name": "rgba8", "image": image, "endpoint": live, "selection": [96, 80, 48, 40], "screenshot": shot},
            {"name": "rgba16", "image": image, "endpoint": live, "depth": "U16", "selection": [40, 150, 30, 50], "mask_grow": 2, "feather": 6},
            {"name": "float", "image": image, "endpoint": live, "depth": "F32", "selection": [120, 40, 40, 36]},
            {"name": "feathered", "image": image, "endpoint": live, "selection": [70, 100, 50, 40], "feather_selection": 12},
            {"name": "group_offset", "image": image, "endpoint": live, "group_offset": [30, 20], "selection": [150, 110, 40, 30], "margin": 40, "processing_size": "fastest"},
            {"name": "refine", "image": image, "endpoint": live, "selection": [96, 80, 48, 40], "refine": True},
            {"name": "server_down", "image": image, "endpoint": dead, "selection": [96, 80, 48, 40]},
        ],
    }  # fmt: skip
    (work / "plan.json").write_text(json.dumps(plan))
    env = {"HOME": home_in, "LAMA_TEST_PLAN": f"{work_in}/plan.json", "LAMA_TOKEN": server.token}
    cmd = ["xvfb-run", "-n", str(free_display()), "-s", "-screen 0 1280x1024x24", "krita", "--nosplash"]  # fmt: skip
    proc = host.run(cmd, env, 180)
    server.stop()
    result_file = work / "result.json"
    assert result_file.is_file(), f"Krita wrote no result (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"  # fmt: skip
    result = json.loads(result_file.read_text())
    assert "scenarios" in result, result
    if os.environ.get("LAMA_UPDATE_SCREENSHOTS") == "1" and host == NEWEST:
        shutil.copy(work / "krita-result.png", REPO / "docs" / "img" / "krita-result.png")
    scenarios = {s["name"]: s for s in result["scenarios"]}
    return {"host": host, "installed": installed, "home": home, "out": work, "result": result,
            "scenarios": scenarios, "log": proc.stdout + proc.stderr,
            "server_log": server.log()}  # fmt: skip


def test_it_is_the_krita_version_and_qt_binding_named(krita_session):
    result = krita_session["result"]
    assert result["krita_version"].startswith(krita_session["host"].series + ".")
    # Krita 6 is Qt6: the plugin must have picked PyQt6 (Krita 5: PyQt5).
    assert result["qt_major"] == (6 if result["krita_version"].startswith("6.") else 5)


def _scenario(session, name):
    scenario = session["scenarios"].get(name)
    assert scenario is not None, f"scenario {name} did not run:\n{session['log'][-3000:]}"
    assert scenario["ok"], scenario.get("error") or scenario
    return scenario


def _raw(session, name, label) -> bytes:
    return (session["out"] / f"{name}.{label}.raw").read_bytes()


def test_install_plugin_without_flags_reaches_this_krita(krita_session):
    """`lama-server install-plugin krita` found this Krita's profile and enabled the plugin
    there, and Krita loaded it (its action ran the scenarios)."""
    target = krita_session["home"] / ".local" / "share" / "krita" / "pykrita" / "lama_inpaint"
    assert f"in {target} (Krita)" in krita_session["installed"]
    rc = (krita_session["home"] / ".config" / "kritarc").read_text()
    assert "enable_lama_inpaint=true" in rc
    assert _scenario(krita_session, "rgba8")["action_text"] == "Remove object"


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
    fmt = {"U8": "BGRA8", "U16": "BGRA16", "F32": "RGBAF32"}[s["color"][1]]
    x, y, w, h = s["window"]
    source = wire_to_array(fmt, w, h, _raw(krita_session, name, "source_window"))
    mask = np.frombuffer(_raw(krita_session, name, "mask_window"), np.uint8).reshape(h, w)
    if s["spec"].get("feather_selection"):  # the soft edge itself reached the server
        assert ((mask > 0) & (mask < 255)).any()
    spec = s["spec"]
    size = host_kit.processing_size(spec.get("processing_size", "full"))
    options = InpaintOptions(mask_grow=spec.get("mask_grow", 4), feather=spec.get("feather", 4),
                             refine=spec.get("refine", False),
                             resize_limit=size.resize_limit or host_kit.SERVER_RESIZE_LIMIT)  # fmt: skip
    if spec.get("refine"):  # the plug-in asked for refinement and the server ran it
        assert "refine=True" in krita_session["server_log"]
    if size.resize_limit:  # the plug-in's processing size reached the server
        assert f"resize_limit={size.resize_limit} " in krita_session["server_log"]
    model = load_for_inference(tiny_model_dir, torch.device("cpu"), PRECISION)
    result = inpaint(model, source, mask, options)
    expected = array_to_wire(fmt, layer_pixels(result.image, result.alpha, fmt))
    got = _raw(krita_session, name, "new_window")
    assert got == expected
    # Nothing outside the window; inside it, fully transparent wherever nothing was filled.
    nx, ny, nw, nh = s["new_bounds"]
    assert x <= nx and y <= ny and nx + nw <= x + w and ny + nh <= y + h
    layer = wire_to_array(fmt, w, h, got)
    assert (layer[result.alpha == 0] == 0).all() and (layer[result.alpha == 1][:, 3] > 0).all()


def test_windows_travel_through_a_pixel_file_unless_the_folder_is_out_of_sight(krita_session):
    """Krita on this machine sees the server's pixel folder (/dev/shm) and passes the larger
    windows (16-bit, float) there; Krita in a chroot, like one in a Flatpak, cannot see it
    and sends every window inline, and the results above are the same."""
    log = krita_session["server_log"]
    if krita_session["host"].root is None:
        assert "pixels=file" in log
    else:
        assert "pixels=file" not in log and "pixels=inline" in log


def test_server_down_shows_a_message_and_adds_nothing(krita_session):
    s = _scenario(krita_session, "server_down")
    message = s["message"]
    assert message["title"] == "LaMa server is not running"
    assert "lama-server" in message["text"]
    assert "LaMa: removed" not in s["siblings"]
    assert s["source_unchanged"] is True and s["responsive"] is True


def test_settings_dialog_offers_the_processing_sizes_and_stores_the_choice(krita_session):
    """LaMa settings in real Krita: the Processing size box lists the shared choices with the
    shared help as its tooltip, shows the stored one, and OK stores the one chosen."""
    seen = krita_session["result"]["settings_dialog"]
    assert "error" not in seen, seen.get("error")
    sizes = host_kit.PROCESSING_SIZES
    assert seen["title"] == "LaMa settings" and seen["items"] == [s.label for s in sizes]
    assert seen["shown"] == sizes[0].label  # the last scenario stored "full"
    assert seen["tooltip"] == host_kit.PROCESSING_SIZE_HELP and seen["stored"] == sizes[-1].key


def test_screenshot_was_taken(krita_session):
    shot = krita_session["out"] / "krita-result.png"
    assert shot.is_file() and shot.stat().st_size > 10_000
