"""The LaMa FFC ResNet generator: configuration dataclass, presets and builder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from lama_model.net.ffc import FFC_BN_ACT, ConcatTupleLayer, FFCResnetBlock


@dataclass(frozen=True)
class FFCRatios:
    """Share of global (Fourier) channels at the input and output of an FFC layer."""

    ratio_gin: float = 0.0
    ratio_gout: float = 0.0


@dataclass(frozen=True)
class LamaConfig:
    """Hyper-parameters of ``FFCResNetGenerator`` as the official ``config.yaml`` names them."""

    input_nc: int = 4
    output_nc: int = 3
    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 18
    max_features: int = 1024
    add_out_act: str = "sigmoid"
    init_conv: FFCRatios = field(default_factory=FFCRatios)
    downsample_conv: FFCRatios = field(default_factory=FFCRatios)
    resnet_conv: FFCRatios = field(default_factory=lambda: FFCRatios(0.75, 0.75))

    @staticmethod
    def preset(name: str) -> LamaConfig:
        """The released architectures: ``big-lama`` (18 blocks) and ``lama-fourier`` (9)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None

    @staticmethod
    def from_official(generator: Mapping[str, Any]) -> LamaConfig:
        """Build from the ``generator:`` section of an official training config."""
        kind = generator.get("kind", "ffc_resnet")
        if kind != "ffc_resnet":
            raise ValueError(f"unsupported generator kind {kind!r} (only ffc_resnet)")
        for key in ("init_conv_kwargs", "downsample_conv_kwargs", "resnet_conv_kwargs"):
            if generator.get(key, {}).get("enable_lfu"):
                raise ValueError(f"{key}.enable_lfu is not supported (no released model uses it)")

        def ratios(key: str, default: FFCRatios) -> FFCRatios:
            kw = generator.get(key) or {}
            return FFCRatios(
                float(kw.get("ratio_gin", default.ratio_gin)),
                float(kw.get("ratio_gout", default.ratio_gout)),
            )

        base = LamaConfig()
        simple = {f.name for f in fields(LamaConfig)} - {
            "init_conv",
            "downsample_conv",
            "resnet_conv",
        }
        kwargs: dict[str, Any] = {k: generator[k] for k in simple if k in generator}
        return LamaConfig(
            **kwargs,
            init_conv=ratios("init_conv_kwargs", base.init_conv),
            downsample_conv=ratios("downsample_conv_kwargs", base.downsample_conv),
            resnet_conv=ratios("resnet_conv_kwargs", base.resnet_conv),
        )


PRESETS: dict[str, LamaConfig] = {
    "big-lama": LamaConfig(n_blocks=18),
    "lama-fourier": LamaConfig(n_blocks=9),
}


class FFCResNetGenerator(nn.Module):
    """Encoder (FFC downsampling) → FFC residual blocks → transposed-conv decoder → sigmoid.

    Input: masked image and mask concatenated, ``(B, 4, H, W)`` with H, W multiples of
    ``2 ** n_downsampling``. Output: ``(B, 3, H, W)`` in [0, 1].
    """

    def __init__(self, config: LamaConfig) -> None:
        super().__init__()
        self.config = config
        c = config

        def width(mult: int) -> int:
            return min(c.max_features, c.ngf * mult)

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            FFC_BN_ACT(c.input_nc, c.ngf, 7, c.init_conv.ratio_gin, c.init_conv.ratio_gout),
        ]
        for i in range(c.n_downsampling):
            ratio_gin, ratio_gout = c.downsample_conv.ratio_gin, c.downsample_conv.ratio_gout
            if i == c.n_downsampling - 1:
                # The last downsampling already produces the global part the blocks expect.
                ratio_gout = c.resnet_conv.ratio_gin
            layers.append(
                FFC_BN_ACT(
                    width(2**i), width(2 ** (i + 1)), 3, ratio_gin, ratio_gout, stride=2, padding=1
                )
            )
        bottleneck = width(2**c.n_downsampling)
        for _ in range(c.n_blocks):
            layers.append(
                FFCResnetBlock(bottleneck, c.resnet_conv.ratio_gin, c.resnet_conv.ratio_gout)
            )
        layers.append(ConcatTupleLayer())
        for i in range(c.n_downsampling):
            mult = 2 ** (c.n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(
                    width(mult),
                    min(c.max_features, int(c.ngf * mult / 2)),
                    kernel_size=3,
                    stride=2,
                    padding=1,
                    output_padding=1,
                ),
                nn.BatchNorm2d(min(c.max_features, int(c.ngf * mult / 2))),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c.ngf, c.output_nc, kernel_size=7)]
        if c.add_out_act == "sigmoid":
            layers.append(nn.Sigmoid())
        elif c.add_out_act == "tanh":
            layers.append(nn.Tanh())
        elif c.add_out_act:
            raise ValueError(f"unsupported add_out_act {c.add_out_act!r}")
        self.model = nn.Sequential(*layers)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.config.n_downsampling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def build_generator(config: LamaConfig | str = "big-lama") -> FFCResNetGenerator:
    """Build an (untrained) generator from a config or a preset name, in eval mode."""
    if isinstance(config, str):
        config = LamaConfig.preset(config)
    return FFCResNetGenerator(config).eval()
