"""Trained models against two classic fills on held-out photos: is the model worth training?

    python bench/inpaint_baselines.py HELD_OUT/ [NAME=MODEL[:best|last] ...]
                                      [--masks thick,medium] [--seeds 0,1,2,3,4] [--json out.json]

Every photo of ``HELD_OUT/`` with the masks ``lama-train eval`` draws (the same photos, the same
256² centre crops, the same official ``thin``/``medium``/``thick`` masks for each ``--seeds``
value: one image and mask pair per photo and seed), filled by

- ``mean colour``: the mean colour of the image's known pixels, everywhere in the hole;
- ``OpenCV Telea``: ``cv2.inpaint(..., 3, cv2.INPAINT_TELEA)`` (skipped, with a note, where
  ``cv2`` is not installed);
- each ``NAME=MODEL``: anything ``lama-train eval`` takes as MODEL (a run folder, a model
  folder, a ``.ckpt``, ``big-lama``), with ``:best`` / ``:last`` for a run's checkpoint.

Scores: PSNR and SSIM of the composited image, exactly as ``lama-train eval --psnr-ssim-only``
computes them (the known pixels are the photo's, so they rank like the hole's error per image),
and the PSNR of the hole alone, which is what a user looks at. A CPU is enough (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lama_model.train.evaluate import TOTAL, Evaluation, evaluation_samples
from lama_model.weights.checkpoint import load_model, model_source
from lama_server.commands.image_files import replace_through_temporary

Fill = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_colour_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` filled with each image's mean colour over its known pixels."""
    known = 1 - mask
    mean = (image * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1)
    return mean.expand_as(image)


def telea_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """OpenCV's Telea inpainting (radius 3) of 8-bit copies of the images."""
    import cv2

    filled = []
    for one_image, one_mask in zip(image, mask, strict=True):
        pixels = (one_image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        hole = (one_mask[0].numpy() > 0.5).astype(np.uint8) * 255
        out = cv2.inpaint(np.ascontiguousarray(pixels), hole, 3, cv2.INPAINT_TELEA)
        filled.append(torch.from_numpy(out).permute(2, 0, 1).float() / 255)
    return torch.stack(filled)


def model_spec(spec: str) -> tuple[str, str, str]:
    """``NAME=MODEL[:best|last]`` → the name, MODEL and the checkpoint (``""``: none)."""
    name, sep, source = spec.partition("=")
    if not sep or not name or not source:
        raise ValueError(f"{spec}: give models as NAME=MODEL[:best|last]")
    model_arg, _, checkpoint = source.rpartition(":")
    if checkpoint not in ("best", "last"):
        model_arg, checkpoint = source, ""
    return name, model_arg, checkpoint


def model_fill(spec: str) -> tuple[str, Fill]:
    """``NAME=MODEL[:best|last]`` → the name and the loaded model's fill."""
    name, model_arg, checkpoint = model_spec(spec)
    model = load_model(model_source(model_arg, checkpoint or None), "cpu").eval()
    return name, lambda image, mask: model(image, mask)


def check_json_output(output: Path, held_out: Path, specs: list[str]) -> None:
    """Refuse, before the long run, a ``--json`` path that is one of the inputs or lies in
    one: in the held-out folder, or at or inside a MODEL file or folder."""
    target = output.resolve()
    inputs = [held_out] + [Path(model_spec(spec)[1]) for spec in specs]
    for source in inputs:
        if source.exists() and target.is_relative_to(source.resolve()):
            raise ValueError(f"--json {output}: inside the input {source}; write it elsewhere")


@torch.no_grad()
def judge(fill: Fill, samples: list[dict]) -> dict[str, float]:
    """PSNR and SSIM as ``lama-train eval`` (composited image), and the hole's own PSNR."""
    evaluation = Evaluation(None)
    hole_psnr = []
    for sample in samples:
        image, mask = sample["image"][None], sample["mask"][None]
        filled = fill(image, mask).float().clamp(0, 1)
        composited = mask * filled + (1 - mask) * image
        evaluation.add(composited, image, mask)
        mse = float(((composited - image) ** 2 * mask).sum() / (mask.sum() * 3).clamp(min=1))
        hole_psnr.append(10 * math.log10(1 / (mse + 1e-10)))
    total = evaluation.results()[TOTAL]
    return {"n": total["n"], "psnr": total["psnr"], "ssim": total["ssim"],
            "hole_psnr": float(np.mean(hole_psnr))}  # fmt: skip


def fills(model_specs: list[str]) -> dict[str, Fill]:
    """The two classic fills (Telea where cv2 imports) and the models, in table order."""
    chosen: dict[str, Fill] = {"mean colour": mean_colour_fill}
    try:
        import cv2  # noqa: F401

        chosen["OpenCV Telea"] = telea_fill
    except ImportError:
        print("OpenCV (cv2) is not installed: no Telea row (pip install opencv-python-headless)")
    for spec in model_specs:
        name, fill = model_fill(spec)
        chosen[name] = fill
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("held_out", type=Path, help="folder of held-out photos")
    parser.add_argument("models", nargs="*", help="NAME=MODEL[:best|last]")
    parser.add_argument("--masks", default="thick,medium", help="mask kinds (thin, medium, thick)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="one pair per photo and seed")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.json:
            check_json_output(args.json, args.held_out, args.models)
        chosen = fills(args.models)
    except ValueError as exc:
        parser.error(str(exc))
    seeds = [int(s) for s in args.seeds.split(",")]
    report: dict[str, dict] = {}
    for kind in args.masks.split(","):
        try:
            samples = [
                sample
                for seed in seeds
                for sample in evaluation_samples(args.held_out, kind, args.size, seed)
            ]
        except ValueError as exc:  # no photos, an unknown mask kind: one line
            parser.error(str(exc))
        print(f"\n{kind} masks: {len(samples)} image and mask pairs ({len(seeds)} seeds), "
              f"{args.size}×{args.size}")  # fmt: skip
        print(f"{'fill':>24} {'PSNR':>7} {'SSIM':>7} {'hole PSNR':>10}")
        for name, fill in chosen.items():
            row = report.setdefault(kind, {})[name] = judge(fill, samples)
            print(f"{name:>24} {row['psnr']:7.2f} {row['ssim']:7.4f} {row['hole_psnr']:10.2f}",
                  flush=True)  # fmt: skip
    if args.json:
        text = json.dumps({"held_out": str(args.held_out), "seeds": seeds, "size": args.size,
                           "results": report}, indent=2) + "\n"  # fmt: skip
        replace_through_temporary(args.json, lambda temporary: temporary.write_text(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
