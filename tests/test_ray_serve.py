"""``lama-server --ray``: the same endpoint, its inpaint jobs on a real Ray Serve deployment.

A real ``lama-server`` process joins the session's local Ray cluster (CPU only) with two
replicas of the tiny model; the clients are the plug-ins' ``LamaClient`` over real sockets.
One test brings up a cluster of its own and shuts it down under the server.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import RAY_TIMEOUT_S, start_server

from lama_client import host_kit
from lama_client.client import Cancelled, ImageData, LamaClient, LamaError
from lama_client.errors import ClusterUnavailable
from lama_server.commands.serve import main as lama_server
from lama_server.wire.pixel_formats import FORMATS, array_to_wire

pytest.importorskip("ray.serve")


def case(w: int, h: int, fmt: str = "RGBA8", seed: int = 0) -> tuple[ImageData, bytes]:
    """An image in ``fmt`` with a hole (hard and soft edges) in its upper left quarter."""
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    spec = FORMATS[fmt]
    pixels = rgba[:, :, : {"RGBA": 4, "BGRA": 4, "RGB": 3}[spec.order]]
    if spec.dtype.itemsize == 2:
        pixels = pixels.astype(np.uint16) * 257
    elif spec.dtype.kind == "f":
        pixels = pixels.astype(np.float32) / 255
    mask = np.zeros((h, w), np.uint8)
    mask[h // 8 : h // 3, w // 8 : w // 3] = 255
    mask[h // 3 : h // 3 + 4, w // 8 : w // 3] = 90
    return ImageData(w, h, fmt, array_to_wire(fmt, pixels)), mask.tobytes()


# Large enough that the tiny model takes seconds on a CPU: a cancel or a kill lands mid-request.
SLOW = (1024, 768)


def inpaint(server, image: ImageData, mask: bytes, options=None, **kwargs) -> ImageData:
    with LamaClient(server.endpoint, server.token, timeout=RAY_TIMEOUT_S) as client:
        return client.inpaint(image, mask, options, **kwargs)


def info(server) -> dict:
    with LamaClient(server.endpoint, server.token) as client:
        return client.info()


@pytest.mark.parametrize(
    ("fmt", "options", "pixel_files"),
    [("RGBA8", None, True), ("BGRA16", {"mask_grow": 2, "feather": 3}, False),
     ("RGBAF32", {"output": "layer"}, True), ("RGB8", {"strategy": "crop"}, False)],
)  # fmt: skip
def test_round_trip_through_ray_equals_the_local_server_byte_for_byte(
    ray_serve_server, one_thread_server, fmt, options, pixel_files
):
    image, mask = case(160, 120, fmt)
    replies = []
    for server in (ray_serve_server, one_thread_server):
        with LamaClient(server.endpoint, server.token, pixel_files=pixel_files) as client:
            client.pixel_file_min_bytes = 0  # even this small image goes through a file
            replies.append(client.inpaint(image, mask, options))
            assert client.last_used_pixel_file == pixel_files
    through_ray, local = replies
    assert (through_ray.width, through_ray.height, through_ray.format) == (160, 120, fmt)
    assert through_ray.data == local.data and through_ray.data != image.data


def test_info_lists_the_replicas_their_devices_and_load(ray_serve_server):
    inpaint(ray_serve_server, *case(64, 48))
    shown = info(ray_serve_server)
    assert shown["device"] == "ray:cpu" and shown["model"] == "tiny-lama"
    assert "on Ray Serve" in shown["path"] and shown["protocol_minor"] == 6
    deployment, *replicas = shown["devices"]
    assert deployment["application"] == "RUNNING"
    assert deployment["replica_states"] == {"RUNNING": 2}
    assert replicas and all(r["device"] == "cpu" and r["actor"] for r in replicas)
    assert sum(r["completed"] for r in replicas) >= 1


def test_progress_reaches_the_client_from_the_replica(ray_serve_server):
    seen = []
    inpaint(ray_serve_server, *case(64, 48), progress=lambda f, s: seen.append((f, s)))
    stages = [stage for _, stage in seen]
    assert stages[0] == "queued" and "inpaint" in stages and seen[-1] == (1.0, "done")
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


def test_cancel_stops_a_request_running_on_a_replica(ray_serve_server):
    image, mask = case(*SLOW)
    cancel = threading.Event()

    def on_progress(fraction: float, stage: str) -> None:
        if stage == "inpaint":  # a replica has it
            cancel.set()

    started = time.monotonic()
    with LamaClient(ray_serve_server.endpoint, ray_serve_server.token) as client:
        with pytest.raises(Cancelled):
            client.inpaint(image, mask, {"strategy": "original"}, progress=on_progress,
                           cancel=cancel)  # fmt: skip
        cancelled_after = time.monotonic() - started
        # The same connection goes on with a fresh request: no stale reply comes first.
        small, small_mask = case(64, 48, seed=1)
        assert client.inpaint(small, small_mask).data != small.data
    assert cancel.is_set() and cancelled_after < RAY_TIMEOUT_S


def test_a_replica_killed_mid_request_costs_one_retry_not_a_wrong_image(
    ray_serve_server, one_thread_server, ray_cluster
):
    import ray

    image, mask = case(*SLOW, seed=2)
    options = {"strategy": "original"}
    expected = inpaint(one_thread_server, image, mask, options)
    taken = threading.Event()
    result: dict = {}

    def request() -> None:
        try:
            result["reply"] = inpaint(ray_serve_server, image, mask, options,
                                      progress=lambda f, s: s == "inpaint" and taken.set())  # fmt: skip
        except LamaError as exc:
            result["error"] = exc

    client = threading.Thread(target=request)
    client.start()
    assert taken.wait(RAY_TIMEOUT_S), "no replica took the request"
    busy = []
    deadline = time.monotonic() + 10
    while not busy and time.monotonic() < deadline:
        busy = [r for r in info(ray_serve_server)["devices"][1:] if r["running"]]
    assert busy, "the request finished before a replica could be killed"
    ray.kill(ray.get_actor(busy[0]["actor"], namespace="serve"))
    client.join(RAY_TIMEOUT_S)
    assert not client.is_alive() and "error" not in result, result.get("error")
    assert result["reply"].data == expected.data
    lines = {r["replica"]: r for r in info(ray_serve_server)["devices"][1:]}
    assert lines[busy[0]["replica"]]["state"] == "dead"  # it died with the request on it


def test_without_a_cluster_the_endpoint_lives_and_answers_unavailable(
    ray_head, tmp_path, tiny_model_dir, monkeypatch
):
    # The server's Ray driver (its bridge process) gives a lost cluster 3 s instead of 60.
    monkeypatch.setenv("RAY_gcs_rpc_server_reconnect_timeout_s", "3")
    server = start_server(
        tmp_path, tiny_model_dir, "--ray", ray_head.address, "--ray-cpus", "0.5",
        "--ray-timeout", "5", "--no-segment", "--no-warmup", timeout=RAY_TIMEOUT_S,
    )  # fmt: skip
    try:
        image, mask = case(64, 48)
        assert inpaint(server, image, mask).data != image.data
        ray_head.stop()
        timeout = 20.0
        for _ in range(2):  # while the bridge notices, and once it is gone
            started = time.monotonic()
            with LamaClient(server.endpoint, server.token, timeout=timeout) as client:
                with pytest.raises(LamaError) as caught:
                    client.inpaint(image, mask)
                assert client.ping()["pong"]
            assert isinstance(caught.value, ClusterUnavailable) and "\n" not in caught.value.message
            assert time.monotonic() - started < timeout
            time.sleep(5)
        assert server.proc.poll() is None
        assert info(server)["devices"][0]["state"] == "unavailable"
        # The plug-ins tell a cluster that is away from a server that is not running.
        assert host_kit.explain(caught.value, "Krita").title == "LaMa server's cluster is unavailable"
    finally:
        server.stop(timeout=60)


@pytest.mark.parametrize(
    ("flags", "words"),
    [(["--replicas", "2"], "need --ray"), (["--ray", "--replicas", "2", "--max-replicas", "3"], "not both"),
     (["--ray", "--min-replicas", "3", "--max-replicas", "2"], "--min-replicas <="),
     (["--ray", "--ray-gpus", "-1"], "--ray-gpus must be >= 0"),
     (["--ray", "--device", "cuda:1"], "--ray-gpus G for CUDA")],
)  # fmt: skip
def test_bad_ray_flags_are_one_line_before_anything_starts(flags, words, capsys, tmp_path):
    assert lama_server(["--model", str(tmp_path / "none"), *flags]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
