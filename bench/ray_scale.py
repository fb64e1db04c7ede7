"""Ray against one machine: folder jobs (images/s) and ``lama-server --ray`` (requests/s).

    python bench/ray_scale.py [--sizes 512,1024] [--images 8] [--actors 1,2] [--model M]
                              [--device cpu] [--cpus 2] [--rows folder,server]
                              [--requests 16] [--clients 4] [--replicas 1,2]

Each row writes ``--images`` seeded photos of one size (a smooth gradient with noise, a
rectangular hole of a quarter of the side) with ``lama-inpaint --input-dir … --output-dir …``,
once locally and once per actor count on a local Ray instance started here (``--cpus`` CPUs,
started before the clock runs). Every run includes its model loads (one per actor): that is
what a user waits for. ``--model`` defaults to the tiny test checkpoint from the fixtures (a
measure of the pipeline's overhead, not of LaMa); give ``big-lama`` for the real network.

Server rows: per size, ``--requests`` inpaint requests from ``--clients`` concurrent clients
(the plug-ins' ``LamaClient``, pixel files) through a plain local ``lama-server --device cpu``
and through ``lama-server --ray`` joined to the same Ray instance with 1 and 2 CPU replicas
(one core each; server starts and model loads are before the clock). ``overhead ms`` is the
median latency of one client's sequential requests through ``--ray`` with one replica minus
through the local server: what the hop through the bridge process and Serve costs a user.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def default_model() -> str:
    """The tiny checkpoint, found as tests/conftest.py finds the fixtures."""
    root = os.environ.get("LAMA_FIXTURES_DIR") or REPO.parent / "shared" / "fixtures"
    return str(Path(root) / "lama-golden" / "tiny-lama")


def write_photos(folder: Path, count: int, size: int) -> Path:
    """``count`` seeded size² photos with masks, in the folder layout."""
    from lama_server.commands.image_files import write_image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    for index in range(count):
        base = (ramp[None, :, None] + ramp[:, None, None] * 0.5) / 1.5
        noise = rng.normal(0, 12, (size, size, 3))
        photo = np.clip(base + noise + index * 7, 0, 255).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[size // 3 : size // 3 + size // 4, size // 4 : size // 2] = 255
        write_image(folder / f"p{index:04d}.png", photo)
        write_image(folder / f"p{index:04d}_mask.png", mask)
    return folder


def images_per_second(src: Path, out: Path, count: int, flags: list[str]) -> float:
    """Run one folder job through ``lama-inpaint``'s own entry point; images/s."""
    from lama_server.commands.inpaint import main

    started = time.perf_counter()
    code = main(["--input-dir", str(src), "--output-dir", str(out), "--quiet", *flags])
    seconds = time.perf_counter() - started
    if code != 0:
        sys.exit(f"ray_scale: lama-inpaint {flags} exited {code}")
    return count / seconds


def requests_per_second(endpoint: str, token: str, size: int, count: int, clients: int):
    """(requests/s with ``clients`` concurrent clients, median ms of one client's requests)."""
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    from lama_client.client import ImageData, LamaClient

    rng = np.random.default_rng(size)
    pixels = rng.integers(0, 256, (size, size, 4), np.uint8)
    image = ImageData(size, size, "RGBA8", pixels.tobytes())
    mask = np.zeros((size, size), np.uint8)
    mask[size // 3 : size // 3 + size // 4, size // 4 : size // 2] = 255

    def one_client(n: int) -> list[float]:
        took = []
        with LamaClient(endpoint, token, timeout=600) as client:
            for _ in range(n):
                started = time.perf_counter()
                client.inpaint(image, mask.tobytes(), {"strategy": "original"})
                took.append(time.perf_counter() - started)
        return took

    one_client(1)  # warm: first connection, pixel file, a replica's first request
    sequential = statistics.median(one_client(max(3, count // clients)))
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, [count // clients] * clients))
    return clients * (count // clients) / (time.perf_counter() - started), sequential * 1000


def server_rows(args: argparse.Namespace, address: str) -> None:
    """Requests/s: local lama-server against ``--ray`` with each replica count."""
    sys.path.insert(0, str(Path(__file__).parent))
    from server_process import start_server

    replicas = [int(n) for n in args.replicas.split(",")]
    setups = [("local", [])] + [
        (f"ray×{n}", ["--ray", address, "--replicas", str(n), "--ray-cpus", "1"])
        for n in replicas
    ]  # fmt: skip
    print(f"{'size':>6} " + " ".join(f"{name + ' req/s':>12}" for name, _ in setups)
          + f" {'overhead ms':>12}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            rates, latency = [], {}
            for name, flags in setups:
                folder = Path(tmp) / f"{name}-{size}"
                folder.mkdir()
                proc, endpoint, token, _ = start_server(
                    folder, Path(args.model), "--device", args.device, "--precision", "fp32",
                    "--no-segment", *flags,
                )  # fmt: skip
                try:
                    rate, latency[name] = requests_per_second(
                        endpoint, token, size, args.requests, args.clients
                    )
                    rates.append(rate)
                finally:
                    proc.terminate()
                    proc.wait(120)
            overhead = latency[setups[1][0]] - latency["local"] if len(setups) > 1 else 0.0
            print(f"{size:>6} " + " ".join(f"{r:>12.2f}" for r in rates) + f" {overhead:>12.1f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--actors", default="1,2")
    p.add_argument("--model", default=default_model())
    p.add_argument("--device", default="cpu")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    p.add_argument("--rows", default="folder,server", help="folder, server or both")
    p.add_argument("--requests", type=int, default=16, help="server rows: requests per setup")
    p.add_argument("--clients", type=int, default=4, help="server rows: concurrent clients")
    p.add_argument("--replicas", default="1,2", help="server rows: replica counts")
    return p


def main() -> None:
    args = build_parser().parse_args()
    import ray

    context = ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    rows = args.rows.split(",")
    if "folder" in rows:
        folder_rows(args)
    if "server" in rows:
        server_rows(args, context.address_info["address"])
    ray.shutdown()


def folder_rows(args: argparse.Namespace) -> None:
    """Images/s: the local folder mode against ``--ray`` with each actor count."""
    model = ["--model", args.model, "--device", args.device, "--precision", "fp32"]
    actors = [int(n) for n in args.actors.split(",")]
    print(f"model {args.model}, {args.images} images per row, load {os.getloadavg()[0]:.2f}")
    print(f"{'size':>6} {'local img/s':>12} " + " ".join(f"{f'ray×{n} img/s':>13}" for n in actors))
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            src = write_photos(Path(tmp) / f"in{size}", args.images, size)
            local = images_per_second(src, Path(tmp) / f"local{size}", args.images, model)
            on_ray = [
                images_per_second(src, Path(tmp) / f"ray{size}-{n}", args.images,
                                  [*model, "--ray", "--ray-actors", str(n)])
                for n in actors
            ]  # fmt: skip
            print(f"{size:>6} {local:>12.2f} " + " ".join(f"{r:>13.2f}" for r in on_ray))


if __name__ == "__main__":
    main()
