"""Images/s of a folder job: the local folder mode against ``--ray`` with 1 and 2 CPU actors.

    python bench/ray_scale.py [--sizes 512,1024] [--images 8] [--actors 1,2] [--model M]
                              [--device cpu] [--cpus 2]

Each row writes ``--images`` seeded photos of one size (a smooth gradient with noise, a
rectangular hole of a quarter of the side) with ``lama-inpaint --input-dir … --output-dir …``,
once locally and once per actor count on a local Ray instance started here (``--cpus`` CPUs,
started before the clock runs). Every run includes its model loads (one per actor): that is
what a user waits for. ``--model`` defaults to the tiny test checkpoint from the fixtures (a
measure of the pipeline's overhead, not of LaMa); give ``big-lama`` for the real network.
Requests/s of ``lama-server --ray`` is not measured: that backend is not built yet (issue 24).
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--actors", default="1,2")
    p.add_argument("--model", default=default_model())
    p.add_argument("--device", default="cpu")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    return p


def main() -> None:
    args = build_parser().parse_args()
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
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
    ray.shutdown()


if __name__ == "__main__":
    main()
