"""``load_segmenter``: a known name (downloaded once, checksum pinned) or a checkpoint file."""

from __future__ import annotations

from pathlib import Path

import torch

from lama_model.choices import SEGMENTERS
from lama_model.devices import resolve_device
from lama_model.errors import CheckpointError
from lama_model.interface import ServedSegmenter
from lama_model.segment.config import PRESETS, SegmenterConfig, load_config
from lama_model.segment.net import Segmenter, build_segmenter
from lama_model.segment.predictor import SegmentPredictor
from lama_model.weights.downloads import ensure_model


def load_weights(path: Path, config: SegmenterConfig) -> Segmenter:
    """A segmenter of ``config`` with the official-format ``state_dict`` in ``path``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable segmenter checkpoint ({exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a state_dict (a {type(state).__name__})")
    model = build_segmenter(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise CheckpointError(
            f"{path}: not a {config.name} checkpoint ({first[0].strip()})"
        ) from exc
    return model


def load_segmenter(
    name_or_path: str = "mobile-sam", device: str = "auto", runtime: str = "auto"
) -> ServedSegmenter:
    """A served segmenter: ``name_or_path`` is a name in ``SEGMENTERS`` (downloaded on first
    use into the per-user cache; offline, a one-line ``WeightsError``) or the path of a
    checkpoint in the official ``state_dict`` format (its configuration beside it as
    ``<file>.json``, else MobileSAM's). ``runtime`` runs the image encoder: ``auto``
    (OpenVINO on a CPU where installed, else torch), ``torch`` or ``openvino`` (see
    :mod:`lama_model.segment.encoder_runtime`)."""
    if name_or_path in SEGMENTERS:
        path, config = ensure_model(name_or_path), PRESETS[name_or_path]
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise CheckpointError(
                f"{name_or_path}: no such segmenter file, and not a known segmenter "
                f"({', '.join(SEGMENTERS)})"
            )
        config = load_config(path)
    target = resolve_device(device)
    model = load_weights(path, config)
    description = f"{config.name} (TinyViT), {target.type}, fp32"
    return SegmentPredictor(model, target, description, runtime)
