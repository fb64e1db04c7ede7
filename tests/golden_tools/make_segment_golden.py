"""Make the segmenter's golden fixtures from the OFFICIAL code on seeded weights.

    pip install segment-anything   # the official prompt encoder, mask decoder, Sam, predictor
    python tests/golden_tools/make_segment_golden.py /path/to/MobileSAM/mobile_sam/modeling/tiny_vit_sam.py

The TinyViT encoder is MobileSAM's ``tiny_vit_sam.py`` (not on the package index), loaded
from the path given. Writes under ``tests/golden/segment/``: ``tiny.pt`` (a seeded
checkpoint of a tiny configuration, official state_dict keys, stored in float16 to stay
small and compared in float32) with ``tiny.pt.json`` (its configuration), and
``golden.pt``: inputs and outputs of the image encoder, the prompt encoder, the mask
decoder and the whole predictor for a box, points of both labels, and box + points.

The official code is imported without ``torchvision`` and ``timm``, which it needs only for
helpers: ``segment_anything/__init__`` imports the predictor, whose ``ResizeLongestSide``
resizes a PIL image with torchvision (PIL's bilinear resize, here called directly), and
``tiny_vit_sam.py`` takes ``DropPath`` (identity at drop rate 0), ``to_2tuple``,
``trunc_normal_`` and ``register_model`` from timm (and the automatic mask generator, never
run, imports torchvision's box operations). :func:`install_shims` provides exactly
those; every layer that computes is the official one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "golden" / "segment"
sys.path.insert(0, str(REPO / "model" / ".."))


def not_used(*args, **kwargs):
    raise RuntimeError("not part of the golden fixtures (needs torchvision)")


def install_shims() -> None:
    """The helper modules the official code imports, without torchvision and timm."""
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.to_pil_image = Image.fromarray
    functional.resize = lambda img, size: img.resize((size[1], size[0]), Image.BILINEAR)
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = type(
        "DropPath",
        (torch.nn.Identity,),
        {"__init__": lambda self, drop_prob=None: torch.nn.Identity.__init__(self)},
    )
    layers.to_2tuple = lambda x: (x, x) if isinstance(x, int) else tuple(x)
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    boxes = types.ModuleType("torchvision.ops.boxes")  # the automatic mask generator's, never run
    boxes.batched_nms = boxes.box_area = not_used
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    for name, module in {
        "torchvision": types.ModuleType("torchvision"),
        "torchvision.transforms": types.ModuleType("torchvision.transforms"),
        "torchvision.transforms.functional": functional,
        "torchvision.ops": types.ModuleType("torchvision.ops"),
        "torchvision.ops.boxes": boxes,
        "timm": types.ModuleType("timm"),
        "timm.models": types.ModuleType("timm.models"),
        "timm.models.layers": layers,
        "timm.models.registry": registry,
    }.items():
        sys.modules.setdefault(name, module)


def load_tiny_vit(path: Path) -> types.ModuleType:
    """MobileSAM's official ``tiny_vit_sam.py`` as a module."""
    spec = importlib.util.spec_from_file_location("tiny_vit_sam", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config():
    """The tiny configuration: 1024 input and a 320-wide last stage (the official TinyViT
    hard-codes a 64 × 64 output grid), everything else as narrow as the code allows."""
    from lama_model.segment.config import SegmenterConfig

    return SegmenterConfig(
        name="mobile-sam-tiny-test",
        embed_dims=(8, 16, 16, 320),
        depths=(1, 1, 1, 0),
        num_heads=(1, 2, 2, 1),
        num_classes=2,
        prompt_dim=32,
        mask_in_chans=4,
        decoder_depth=1,
        decoder_mlp_dim=16,
        decoder_heads=2,
        iou_head_hidden_dim=16,
    )


def official_sam(config, tiny_vit: types.ModuleType) -> torch.nn.Module:
    """The official Sam with the official TinyViT, both in ``config``'s sizes."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    c, grid = config, config.embedding_size
    encoder = tiny_vit.TinyViT(
        img_size=c.image_size,
        num_classes=c.num_classes,
        embed_dims=list(c.embed_dims),
        depths=list(c.depths),
        num_heads=list(c.num_heads),
        window_sizes=list(c.window_sizes),
        drop_path_rate=0.0,
    )
    # The official neck is hard-coded 256 wide; the tiny one is built from the same official
    # classes at the tiny width (the only change to the official architecture).
    encoder.neck = torch.nn.Sequential(
        torch.nn.Conv2d(c.embed_dims[-1], c.prompt_dim, 1, bias=False),
        tiny_vit.LayerNorm2d(c.prompt_dim),
        torch.nn.Conv2d(c.prompt_dim, c.prompt_dim, 3, padding=1, bias=False),
        tiny_vit.LayerNorm2d(c.prompt_dim),
    )
    transformer = TwoWayTransformer(
        depth=c.decoder_depth,
        embedding_dim=c.prompt_dim,
        mlp_dim=c.decoder_mlp_dim,
        num_heads=c.decoder_heads,
    )
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=c.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(c.image_size, c.image_size),
            mask_in_chans=c.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=c.num_multimask_outputs,
            transformer=transformer,
            transformer_dim=c.prompt_dim,
            iou_head_depth=c.iou_head_depth,
            iou_head_hidden_dim=c.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def seeded_state(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every saved tensor random (the official init leaves many zero, which would hide a
    wrong bias or a missing norm), scaled to keep activations moderate, rounded to float16."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in model.state_dict().items():
        if not value.is_floating_point():
            state[name] = value
            continue
        noise = torch.randn(value.shape, generator=gen)
        if name.endswith("running_var"):
            noise = 0.5 + torch.rand(value.shape, generator=gen)
        elif value.ndim >= 2 and "gaussian_matrix" not in name:
            noise = noise / np.sqrt(value[0].numel())
        elif name.endswith("weight") and value.ndim == 1:
            noise = 1 + 0.1 * noise
        elif value.ndim == 1:
            noise = 0.1 * noise
        state[name] = noise.half()
    return state


def test_image() -> np.ndarray:
    """A dark disc on a light textured background, 96 × 64 (h × w): not square, not 1024."""
    y, x = np.mgrid[0:96, 0:64]
    disc = (x - 30) ** 2 + (y - 50) ** 2 < 18**2
    rng = np.random.default_rng(0)
    image = 200 + rng.integers(-20, 20, size=(96, 64, 3))
    image[disc] = 40 + rng.integers(-10, 10, size=(int(disc.sum()), 3))
    return image.astype(np.uint8)


PROMPTS = {  # name → (box, points, labels) in image pixels
    "box": ((10.0, 30.0, 50.0, 70.0), None, None),
    "point": (None, [[30.0, 50.0]], [1]),
    "points": (None, [[30.0, 50.0], [5.0, 5.0], [40.0, 60.0]], [1, 0, 1]),
    "box_points": ((10.0, 30.0, 50.0, 70.0), [[30.0, 50.0], [60.0, 90.0]], [1, 0]),
}


def official_outputs(sam: torch.nn.Module, image: np.ndarray) -> dict:
    """The official predictor's embedding, prompt embeddings and masks for each prompt."""
    from segment_anything.predictor import SamPredictor

    predictor = SamPredictor(sam)
    predictor.set_image(image)
    out: dict = {"image": torch.from_numpy(image), "features": predictor.features.clone()}
    for name, (box, points, labels) in PROMPTS.items():
        box_np = None if box is None else np.array(box)
        pts = None if points is None else np.array(points)
        lab = None if labels is None else np.array(labels)
        multimask = box is None and len(points) == 1  # the contract's (and SAM's) choice
        logits, iou, low_res = predictor.predict(
            pts, lab, box_np, multimask_output=multimask, return_logits=True
        )
        coords = None if pts is None else predictor.transform.apply_coords(pts, image.shape[:2])
        boxes = (
            None if box_np is None else predictor.transform.apply_boxes(box_np, image.shape[:2])[0]
        )
        with torch.no_grad():
            sparse, _ = sam.prompt_encoder(
                points=None
                if coords is None
                else (torch.tensor(coords[None], dtype=torch.float32), torch.tensor(lab[None])),
                boxes=None if boxes is None else torch.tensor(boxes[None], dtype=torch.float32),
                masks=None,
            )
        out[name] = {
            "sparse": sparse,
            "iou": torch.from_numpy(iou),
            "logits": torch.from_numpy(logits),
            "input_points": None if coords is None else torch.tensor(coords, dtype=torch.float32),
            "input_box": None if boxes is None else torch.tensor(boxes, dtype=torch.float32),
        }
        if name == "box":  # the decoder's own output, kept for one prompt (256² floats)
            out[name]["low_res"] = torch.from_numpy(low_res)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "tiny_vit_sam", type=Path, help="MobileSAM's mobile_sam/modeling/tiny_vit_sam.py"
    )
    args = parser.parse_args()
    install_shims()
    from lama_model.segment.config import save_config

    config = tiny_config()
    sam = official_sam(config, load_tiny_vit(args.tiny_vit_sam))
    state = seeded_state(sam)
    sam.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True
    )
    # The official TinyViT caches its attention biases when switched to eval mode; switch
    # again after loading, as MobileSAM's README does, or the biases of the init stay in use.
    sam.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save(state, OUT / "tiny.pt")
    save_config(config, OUT / "tiny.pt")
    torch.save(official_outputs(sam, test_image()), OUT / "golden.pt")
    versions = {
        "segment-anything": importlib.metadata.version("segment-anything"),
        "torch": torch.__version__,
    }
    (OUT / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    import importlib.metadata

    main()
