"""The segmenter's configuration: one dataclass, presets by name, and the JSON beside a file.

A checkpoint in the official ``state_dict`` format does not say its architecture; a file
``<checkpoint>.json`` beside it (written by :func:`save_config`) does. Without one the file is
taken for the MobileSAM release (TinyViT-5M), the only one the official format knows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lama_model.errors import CheckpointError

# SAM's ImageNet normalisation in 0..255 (the official Sam's pixel_mean / pixel_std).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SegmenterConfig:
    """MobileSAM: a TinyViT image encoder and SAM's prompt encoder and mask decoder.

    The official TinyViT keeps the last stage at stride 16 (its last patch merging has
    stride 1) when that stage is 320, 448 or 576 wide; other widths make it stride 32.
    """

    name: str = "mobile-sam"
    image_size: int = 1024  # the longest side an image is resized to
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    num_classes: int = 1000  # TinyViT's unused ImageNet head, kept so official files load
    prompt_dim: int = 256  # the neck's output, the prompt embeddings and the decoder width
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    extra: dict = field(default_factory=dict)  # room for notes; ignored by the builder

    @property
    def embedding_size(self) -> int:
        """The side of the encoder's output grid (64 for a 1024 input)."""
        stride = 16 if self.embed_dims[-1] in (320, 448, 576) else 32
        return self.image_size // stride


MOBILE_SAM = SegmenterConfig()
PRESETS = {"mobile-sam": MOBILE_SAM}


def config_path(checkpoint: Path) -> Path:
    """Where the configuration of ``checkpoint`` is kept: ``<checkpoint>.json``."""
    return checkpoint.with_name(checkpoint.name + ".json")


def save_config(config: SegmenterConfig, checkpoint: Path) -> None:
    """Write ``config`` beside ``checkpoint`` so that loading the file needs no flags."""
    config_path(checkpoint).write_text(json.dumps(asdict(config), indent=1) + "\n")


def load_config(checkpoint: Path) -> SegmenterConfig:
    """The configuration beside ``checkpoint``, or MobileSAM's when there is none."""
    path = config_path(checkpoint)
    if not path.exists():
        return MOBILE_SAM
    try:
        raw = json.loads(path.read_text())
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return SegmenterConfig(**fields)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a segmenter configuration ({exc})") from exc
