"""One typed configuration per training run, saved as the run's ``config.yaml``.

The YAML uses the official LaMa layout (``generator:``, ``discriminator:``, ``losses:``,
``optimizers:``, ``data:``, ``trainer:``) so that :mod:`lama_model.weights.checkpoint` — and the
official code — read a run folder like the released ``big-lama`` folder. What the official
schema has no place for (precision, accumulation, logging cadence…) lives under ``lama_train:``.
No Hydra, no OmegaConf: the file is written and read with plain PyYAML.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from lama_model.choices import PERCEPTUAL_ENCODERS, TRAIN_PRECISIONS
from lama_model.net.generator import FFCRatios, LamaConfig
from lama_model.train.augment import AUGMENTATIONS
from lama_model.weights.official_config import ConfigError, generator_kwargs, read_yaml

# Generator architectures ``--generator`` accepts (their names, torch-free, are
# lama_model.choices.TRAIN_GENERATORS, for --help). ``small`` (ngf 32, 4 blocks: an eighth of
# lama-fourier's parameters) is sized for a CPU, though an hour of 2 cores was measured too short
# to beat a classic fill (README); ``tiny`` is the golden test model's architecture (ngf 16,
# 2 blocks): only for tests and smoke runs.
GENERATOR_PRESETS: dict[str, LamaConfig] = {
    "big-lama": LamaConfig(n_blocks=18),
    "lama-fourier": LamaConfig(n_blocks=9),
    "small": LamaConfig(ngf=32, n_blocks=4),
    "tiny": LamaConfig(ngf=16, n_blocks=2),
}


@dataclass(frozen=True)
class DiscriminatorConfig:
    """pix2pixHD N-layer discriminator (``pix2pixhd_nlayer``); Big LaMa's is ndf 64, 4 layers."""

    ndf: int = 64
    n_layers: int = 4


# ``--discriminator`` (names: lama_model.choices.TRAIN_DISCRIMINATORS)
DISCRIMINATOR_PRESETS: dict[str, DiscriminatorConfig] = {
    "big": DiscriminatorConfig(ndf=64, n_layers=4),
    "small": DiscriminatorConfig(ndf=32, n_layers=3),
    "tiny": DiscriminatorConfig(ndf=8, n_layers=2),
}


@dataclass(frozen=True)
class LossConfig:
    """Loss weights with the official names and Big LaMa's values."""

    l1_weight_known: float = 10.0
    l1_weight_missing: float = 0.0
    adversarial_weight: float = 10.0
    gp_coef: float = 0.001
    feature_matching_weight: float = 100.0
    resnet_pl_weight: float = 30.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 0:
                raise ValueError(f"loss weight {name} must be 0 or more, not {value}")


def default_workers() -> int:
    """Data-loading processes when ``--workers`` is not given: the official 4, but at most one
    less than the CPUs this process may use, so that the training loop keeps a core (and a
    2-core laptop gets 1 worker, not PyTorch's "more workers than CPUs" warning)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(4, (cpus or 1) - 1))


def default_val_every(steps: int) -> int:
    """Steps per validation when ``--val-every`` is not given: ten validations over the run,
    but never more than 2000 steps apart (the GPU-scale runs' cadence) nor fewer than 50."""
    return max(1, min(2_000, max(50, steps // 10), steps))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run.

    ``batch_size`` is per process and per micro-batch: one optimiser step sees
    ``batch_size × accumulate × world_size`` images (Big LaMa: 15 × 1 × 8 = 120).
    """

    data: str
    run_dir: str
    run_title: str = ""
    generator: LamaConfig = field(default_factory=lambda: GENERATOR_PRESETS["big-lama"])
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    generator_lr: float = 1e-3
    discriminator_lr: float = 1e-4
    grad_clip: float = 1.0
    crop: int = 256
    batch_size: int = 8
    accumulate: int = 1
    workers: int = field(default_factory=default_workers)
    mask_kind: str = "large"
    augment: str = "official"
    max_side: int | None = None
    seed: int = 0
    steps: int = 100_000
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    log_every: int = 50
    preview_every: int = 500
    val_every: int = 2_000
    save_every: int = 1_000
    val_data: str | None = None
    val_count: int = 32
    val_size: int = 256
    init_from: str | None = None
    resnet_pl: str | None = None
    perceptual_encoder: str = "resnet50dilated"

    def __post_init__(self) -> None:
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(TRAIN_PRECISIONS)}")
        if self.perceptual_encoder not in PERCEPTUAL_ENCODERS:
            raise ValueError(f"perceptual_encoder must be one of {', '.join(PERCEPTUAL_ENCODERS)}")
        multiple = 2**self.generator.n_downsampling
        for name in ("crop", "val_size"):
            value = getattr(self, name)
            if value <= 0 or value % multiple:
                raise ValueError(f"{name} must be a positive multiple of {multiple}, not {value}")
        for name in ("batch_size", "accumulate", "steps", "log_every", "preview_every",
                     "val_every", "save_every", "val_count"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError("workers must be 0 or more")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}")
        if self.max_side is not None and self.max_side < self.crop:
            raise ValueError(f"max_side must be at least the crop {self.crop}, not {self.max_side}")

    def with_changes(self, **changes: Any) -> TrainConfig:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    # -- the official YAML layout -------------------------------------------------------

    def to_yaml_dict(self) -> dict[str, Any]:
        """The run's ``config.yaml`` content: official sections plus ``lama_train:``."""
        official_only = {"data", "run_dir", "run_title", "generator", "discriminator", "losses"}
        extras = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in official_only
        }
        return {
            "run_title": self.run_title,
            "training_model": {
                "kind": "default",
                "visualize_each_iters": self.preview_every,
                "concat_mask": True,
                "store_discr_outputs_for_vis": True,
            },
            "losses": self._losses_section(),
            "generator": self._generator_section(),
            "discriminator": {
                "kind": "pix2pixhd_nlayer",
                "input_nc": 3,
                "ndf": self.discriminator.ndf,
                "n_layers": self.discriminator.n_layers,
            },
            "optimizers": {
                "generator": {"kind": "adam", "lr": self.generator_lr},
                "discriminator": {"kind": "adam", "lr": self.discriminator_lr},
            },
            "data": self._data_section(),
            "trainer": self._trainer_section(),
            "lama_train": {"run_dir": self.run_dir, **extras},
        }

    def _losses_section(self) -> dict[str, Any]:
        loss = self.losses
        return {
            "l1": {
                "weight_missing": loss.l1_weight_missing,
                "weight_known": loss.l1_weight_known,
            },
            "perceptual": {"weight": 0},
            "adversarial": {
                "kind": "r1",
                "weight": loss.adversarial_weight,
                "gp_coef": loss.gp_coef,
                "mask_as_fake_target": True,
                "allow_scale_mask": True,
            },
            "feature_matching": {"weight": loss.feature_matching_weight},
            "resnet_pl": {"weight": loss.resnet_pl_weight, "weights_path": self.resnet_pl},
        }

    def _generator_section(self) -> dict[str, Any]:
        g = self.generator
        return {
            "kind": "ffc_resnet",
            "input_nc": g.input_nc,
            "output_nc": g.output_nc,
            "ngf": g.ngf,
            "n_downsampling": g.n_downsampling,
            "n_blocks": g.n_blocks,
            "max_features": g.max_features,
            "add_out_act": g.add_out_act,
            "init_conv_kwargs": _ratios(g.init_conv),
            "downsample_conv_kwargs": _ratios(g.downsample_conv),
            "resnet_conv_kwargs": _ratios(g.resnet_conv),
        }

    def _data_section(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "num_workers": self.workers,
            "train": {
                "indir": self.data,
                "out_size": self.crop,
                "mask_kind": self.mask_kind,
                "transform_variant": "no_augs" if self.augment == "none" else "distortions",
            },
            "val": {"indir": self.val_data or self.data, "out_size": self.val_size},
        }

    def _trainer_section(self) -> dict[str, Any]:
        return {
            "kwargs": {
                "max_steps": self.steps,
                "gradient_clip_val": self.grad_clip,
                "precision": 32 if self.precision == "fp32" else "bf16",
                "val_check_interval": self.val_every,
                "log_every_n_steps": self.log_every,
            },
            "checkpoint_kwargs": {"save_last": True, "monitor": "val_ssim", "mode": "max"},
        }

    def save(self, path: str | Path) -> None:
        """Write ``config.yaml`` (atomically: a crash never leaves half a file)."""
        path = Path(path)
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(self.to_yaml_dict(), sort_keys=False), encoding="utf-8")
        tmp.replace(path)

    @staticmethod
    def load(path: str | Path) -> TrainConfig:
        """Read a ``config.yaml`` that :meth:`save` wrote."""
        path = Path(path)
        root = read_yaml(path, "training config")
        if not isinstance(root, dict) or not isinstance(root.get("lama_train"), dict):
            raise ConfigError(f"{path}: not a lama-train run config (no 'lama_train:' section)")
        extras = dict(root["lama_train"])
        if isinstance(extras.get("augment"), bool):
            # Runs from before --augment took a name made their crops with the NumPy pipeline.
            extras["augment"] = "numpy" if extras["augment"] else "none"
        losses = root.get("losses") or {}
        discr = root.get("discriminator") or {}
        known = {f.name for f in fields(TrainConfig)}
        unknown = set(extras) - known
        if unknown:
            raise ConfigError(f"{path}: unknown lama_train keys: {', '.join(sorted(unknown))}")
        try:
            return TrainConfig(
                data=root["data"]["train"]["indir"],
                run_title=root.get("run_title") or "",
                generator=LamaConfig.from_official(generator_kwargs(root, path)),
                discriminator=DiscriminatorConfig(
                    ndf=int(discr.get("ndf", 64)), n_layers=int(discr.get("n_layers", 4))
                ),
                losses=LossConfig(
                    l1_weight_known=float(losses["l1"]["weight_known"]),
                    l1_weight_missing=float(losses["l1"]["weight_missing"]),
                    adversarial_weight=float(losses["adversarial"]["weight"]),
                    gp_coef=float(losses["adversarial"]["gp_coef"]),
                    feature_matching_weight=float(losses["feature_matching"]["weight"]),
                    resnet_pl_weight=float((losses.get("resnet_pl") or {}).get("weight", 0)),
                ),
                **extras,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: incomplete or invalid training config: {exc}") from exc


def _ratios(r: FFCRatios) -> dict[str, Any]:
    return {"ratio_gin": r.ratio_gin, "ratio_gout": r.ratio_gout, "enable_lfu": False}


def architecture_from_folder(folder: str | Path) -> tuple[LamaConfig, DiscriminatorConfig]:
    """Generator and discriminator shapes of a model folder (official release or our run)."""
    path = Path(folder) / "config.yaml"
    try:
        root = read_yaml(path)  # read once: generator and discriminator sections
        generator = LamaConfig.from_official(generator_kwargs(root, path))
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    discr = root.get("discriminator") or {}
    if discr.get("kind", "pix2pixhd_nlayer") != "pix2pixhd_nlayer":
        raise ConfigError(f"{path}: unsupported discriminator kind {discr.get('kind')!r}")
    return generator, DiscriminatorConfig(
        ndf=int(discr.get("ndf", 64)), n_layers=int(discr.get("n_layers", 4))
    )
