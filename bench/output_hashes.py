"""Hash the outputs of many inference paths, to prove a refactor changed no byte.

    python bench/output_hashes.py before.json          # on the commit before the change
    python bench/output_hashes.py after.json           # on the commit after it
    cmp before.json after.json   # the files must be equal

Runs the tiny fixture model (``lama-golden/tiny-lama``; the folder from ``LAMA_GOLDEN_DIR``,
else ``../shared/fixtures/lama-golden`` beside the checkout) through every strategy, with
and without mask growing, on the golden cases, a 900×700 photo with two objects, a 16-bit
RGBA image and a float32 image, for the plain checkpoint and the fp32 optimized model, plus
the region path; writes one short SHA-256 per output. The redesign of issue 19 gave 81
identical hashes before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lama_model import InpaintOptions, inpaint, inpaint_region, load_for_inference, load_model

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("LAMA_GOLDEN_DIR") or REPO.parent / "shared/fixtures/lama-golden")


def _digest(array: np.ndarray) -> str:
    assert array.dtype != object, "hash pixels, not a result object"
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _images() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    images = {}
    for case in ("case-a", "case-b"):
        image = np.asarray(Image.open(GOLDEN / case / "image.png").convert("RGB"))
        images[case] = image, np.asarray(Image.open(GOLDEN / case / "mask.png").convert("L"))
    photo = rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)
    holes = np.zeros((700, 900), np.uint8)
    holes[100:180, 200:300] = 255
    holes[500:560, 700:760] = 200  # a soft selection edge
    images["big"] = photo, holes
    deep = rng.integers(0, 65535, (130, 170, 4), dtype=np.uint16)
    images["rgba16"] = deep, (rng.random((130, 170)) > 0.8).astype(np.uint8) * 255
    floats = rng.random((96, 120, 3), dtype=np.float32)
    images["f32"] = floats, (rng.random((96, 120)) > 0.7).astype(np.uint8) * 255
    return images


def output_hashes() -> dict[str, str]:
    """One hash per (model, image, strategy, mask growth), and one for the region path."""
    torch.set_num_threads(2)
    source = GOLDEN / "tiny-lama"
    optimized = load_for_inference(str(source), torch.device("cpu"), "fp32", backend="torch")
    models = {"torch-fp32": optimized, "plain": load_model(source)}
    images = _images()
    hashes = {}
    for model_name, model in models.items():
        for image_name, (image, mask) in images.items():
            for strategy in ("auto", "crop", "resize", "original"):
                for grow, feather in ((4, 4), (0, 0)):
                    options = InpaintOptions(
                        mask_grow=grow, feather=feather, strategy=strategy, resize_limit=256
                    )
                    out = inpaint(model, image, mask, options)
                    hashes[f"{model_name}/{image_name}/{strategy}/{grow}"] = _digest(out.image)
    region = inpaint_region(optimized, *images["big"], InpaintOptions(strategy="crop"))
    hashes["region"] = _digest(region.full().image)
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="JSON file to write")
    args = parser.parse_args()
    hashes = output_hashes()
    args.output.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{len(hashes)} output hashes written to {args.output}")


if __name__ == "__main__":
    main()
