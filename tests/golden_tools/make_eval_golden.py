"""Write tests/golden/eval/: the official LaMa evaluator's numbers on fixed inputs and seeded networks.

    python tests/golden_tools/make_eval_golden.py /path/to/official/lama [--out tests/golden/eval]

The official checkout (https://github.com/advimman/lama; only ``saicinpainting/`` is read) is
imported, never copied. Both evaluators get the SAME networks: ours are filled with the seeded
weights of :func:`seeded_state` (pretrained weights cannot be shipped in a test), and their
state dicts are mapped into the official modules. The official ``InpaintingEvaluator`` then
scores nine 64×64 inpainted images whose masks fall in five area bins (one on a bin edge, one
full, one bin with a single image), and this script writes:

- ``inputs.npz``: ``image``, ``inpainted`` (N×3×H×W uint8), ``mask`` (N×1×H×W uint8, 1 = hole);
- ``official.npz``: per-image ``lpips`` and ``ssim``, and the Inception features
  ``features_pred`` / ``features_target`` (N×2048 float32) of the official networks;
- ``official.json``: ``InpaintingEvaluator.evaluate()`` per bin and total, and the two F1s.

Needs torchvision (``pip install torchvision`` matching torch) and scipy; the official
evaluator's other imports (scikit-learn, joblib, scikit-image, the ADE20k segmentation model,
PyTorch Lightning) serve features it does not use here and are stubbed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import types
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "golden" / "eval"
SIZE = 64
# Hole pixels of each mask (of 64×64 = 4096): bins 0, 0, 2, 2, 5 (2048: exactly on the 50 % edge,
# so it goes to the bin above), 5, 7 (alone: FID is NaN), 9 (full mask), 9.
HOLE_PIXELS = (100, 300, 1100, 1200, 2048, 2200, 3000, 4096, 3900)
INPUT_SEED = 22
# LPIPS's VGG-16 slices in torchvision's ``features`` indices (what the official code wraps).
VGG_SLICES = ((1, range(0, 4)), (2, range(4, 9)), (3, range(9, 16)), (4, range(16, 23)),
              (5, range(23, 30)))


def seeded_tensor(key: str, like: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for a pretrained tensor, from its state-dict key and shape."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    shape, name = tuple(like.shape), key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return torch.tensor(1, dtype=torch.int64)
    noise = torch.randn(shape, generator=g, dtype=torch.float32)
    if name == "running_var":
        return 0.5 + torch.rand(shape, generator=g, dtype=torch.float32)
    if like.dim() == 4:  # convolution weights: He-normal, so that deep activations stay O(1)
        return noise * math.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))
    if name == "weight":  # batch-norm scale
        return 1 + 0.1 * noise
    return 0.1 * noise  # biases, batch-norm shifts and running means


def seeded_state(module: torch.nn.Module, keep: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Seeded weights for every entry of ``module.state_dict()`` except those in ``keep``."""
    return {
        k: v if k in keep else seeded_tensor(k, v) for k, v in module.state_dict().items()
    }


def seeded_networks():
    """Our LPIPS and FID Inception with the seeded weights (what the fixtures were made with)."""
    from lama_model.train.evaluate import EvaluationNetworks
    from lama_model.train.inception import FIDInceptionV3
    from lama_model.train.lpips import LPIPS

    lpips, inception = LPIPS(), FIDInceptionV3()
    lpips.load_state_dict(seeded_state(lpips, keep=("shift", "scale")))
    inception.load_state_dict(seeded_state(inception))
    return EvaluationNetworks(lpips, inception)


def golden_inputs() -> dict[str, np.ndarray]:
    """Smooth random photos, a different fill in each hole, masks of fixed areas."""
    rng = np.random.default_rng(INPUT_SEED)
    n = len(HOLE_PIXELS)

    def smooth(count: int) -> np.ndarray:
        coarse = torch.from_numpy(rng.random((count, 3, 8, 8), dtype=np.float32))
        fine = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear")
        noisy = fine.numpy() + 0.05 * rng.standard_normal((count, 3, SIZE, SIZE))
        return np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)

    image, fill = smooth(n), smooth(n)
    mask = np.zeros((n, 1, SIZE * SIZE), np.uint8)
    for i, holes in enumerate(HOLE_PIXELS):
        mask[i, 0, rng.permutation(SIZE * SIZE)[:holes]] = 1
    mask = mask.reshape(n, 1, SIZE, SIZE)
    inpainted = np.where(mask == 1, fill, image).astype(np.uint8)
    return {"image": image, "inpainted": inpainted, "mask": mask}


def _import_torchvision() -> None:
    # The PyPI torchvision wheel is built against CUDA torch; beside a CPU torch its C ops do not
    # load and registering their fake kernels fails. The models used here need none of them.
    real = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: (lambda f: f)
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = real


def _stub_unused_imports() -> None:
    stubs = {
        "sklearn": {}, "sklearn.svm": {}, "joblib": {"Parallel": None, "delayed": None},
        "models": {}, "models.ade20k": {"SegmentationModule": None, "NUM_CLASS": 150,
                                        "segm_options": None},
        "skimage": {}, "skimage.metrics": {"structural_similarity": None},
        "saicinpainting.utils": {"get_shape": None}, "easydict": {"EasyDict": dict},
    }
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs, __path__=[])
        sys.modules[name] = module


def official_scores(official: Path, ours, lin_file: Path) -> dict:
    """The official SSIM, LPIPS and FID scores, their networks holding ``ours``'s weights."""
    sys.path.insert(0, str(official))
    _import_torchvision()
    _stub_unused_imports()
    from saicinpainting.evaluation.losses import base_loss, lpips
    from saicinpainting.evaluation.losses.fid import inception
    from torchvision import models

    # Nothing is downloaded: VGG-16 is built empty, the Inception "download" returns our weights.
    lpips.tv = types.SimpleNamespace(vgg16=lambda pretrained, requires_grad=False: models.vgg16())
    fid_state = dict(ours.inception.state_dict())
    fid_state["fc.weight"], fid_state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    inception.load_state_dict_from_url = lambda *a, **k: fid_state

    lpips_score = base_loss.LPIPSScore(model_path=str(lin_file), use_gpu=False)
    vgg = {k: v for k, v in ours.lpips.state_dict().items() if k.startswith("features.")}
    mapped = {}
    for k, v in vgg.items():
        index = int(k.split(".")[1])
        slice_no = next(n for n, indices in VGG_SLICES if index in indices)
        mapped[f"slice{slice_no}.{k.split('.', 1)[1]}"] = v
    lpips_score.score.model.net.net.load_state_dict(mapped, strict=True)
    return {"ssim": base_loss.SSIMScore(), "lpips": lpips_score, "fid": base_loss.FIDScore()}


def official_evaluation(official: Path, inputs: dict[str, np.ndarray], out: Path) -> None:
    """Run the official ``InpaintingEvaluator`` and write official.npz and official.json."""
    ours = seeded_networks()
    with tempfile.TemporaryDirectory() as tmp:
        lin_file = Path(tmp) / "vgg.pth"
        lins = {f"lin{i}.model.1.weight": w for i, w in enumerate(ours.lpips.lins.state_dict()
                                                                      .values())}
        torch.save(lins, lin_file)
        scores = official_scores(official, ours, lin_file)
    import tqdm.auto  # noqa: F401  (the official evaluator uses tqdm.auto without importing it)
    from saicinpainting.evaluation.evaluator import (
        InpaintingEvaluator,
        lpips_fid100_f1,
        ssim_fid100_f1,
    )

    tensors = {k: torch.from_numpy(v.astype(np.float32) / (1 if k == "mask" else 255))
               for k, v in inputs.items()}
    dataset = [{k: tensors[k][i] for k in tensors} for i in range(len(HOLE_PIXELS))]
    evaluator = InpaintingEvaluator(dataset, scores, batch_size=4, device="cpu")
    results = evaluator.evaluate()
    per_image = {
        "lpips": scores["lpips"].score(tensors["inpainted"], tensors["image"]).flatten(),
        "ssim": scores["ssim"].score(tensors["inpainted"], tensors["image"]),
        "features_pred": scores["fid"]._get_activations(tensors["inpainted"]),
        "features_target": scores["fid"]._get_activations(tensors["image"]),
    }
    np.savez_compressed(out / "official.npz",
                        **{k: v.detach().numpy().astype(np.float32) for k, v in per_image.items()})
    table = {f"{name}/{group}": {k: float(v) for k, v in row.items()}
             for (name, group), row in results.items()}
    table["ssim_fid100_f1/total"] = {"mean": float(ssim_fid100_f1(results))}
    table["lpips_fid100_f1/total"] = {"mean": float(lpips_fid100_f1(results))}
    (out / "official.json").write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("official", type=Path, help="an official LaMa checkout (has saicinpainting/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not (args.official / "saicinpainting" / "evaluation").is_dir():
        parser.error(f"{args.official}: no saicinpainting/evaluation inside")
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = golden_inputs()
    np.savez_compressed(args.out / "inputs.npz", **inputs)
    with torch.no_grad():
        official_evaluation(args.official.resolve(), inputs, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
