"""A 6000×4000 photo with a small object, Big LaMa shape (random weights), default options.

    python bench/large_photo.py [--object 120] [--threads 2]

The automatic strategy runs only a context window around the object through the generator,
so the time depends on the object, not on the photo's 24 megapixels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lama_model.net.generator import build_generator
from lama_model.pipeline import InpaintOptions, inpaint
from lama_model.weights.checkpoint import LamaModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--object", type=int, default=120, help="object size in pixels")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LamaModel(build_generator("big-lama"), name="big-lama-random")
    photo = np.random.default_rng(0).integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    mask = np.zeros((4000, 6000), np.uint8)
    s = args.object
    mask[2000 : 2000 + s, 3000 : 3000 + s] = 255
    stages: list[str] = []
    start = time.perf_counter()
    result = inpaint(model, photo, mask, InpaintOptions(), lambda _f, stage: stages.append(stage))
    seconds = time.perf_counter() - start
    changed = int((result.alpha > 0).sum())
    windows = stages.count("inpaint")
    print(
        f"6000x4000 photo, {s}x{s} px object, Big LaMa shape, {args.threads} threads: "
        f"{seconds:.2f} s ({windows} window(s), {changed} pixels changed)"
    )


if __name__ == "__main__":
    main()
