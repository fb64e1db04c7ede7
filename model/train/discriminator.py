"""The pix2pixHD N-layer PatchGAN discriminator LaMa trains with, with the official key layout.

``NLayerDiscriminator(ndf=64, n_layers=4)`` is Big LaMa's (``pix2pixhd_nlayer``): 4×4 convs,
stride 2 for the first ``n_layers`` stages and stride 1 for the last two, channels doubling up to
512, BatchNorm after every conv except the first and the last, LeakyReLU(0.2). Stage ``k`` is the
attribute ``model{k}``, so the state_dict keys are the release's (``model0.0.weight`` …) and
checkpoints' ``discriminator.*`` entries load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

_KERNEL = 4
_PADDING = 2  # ceil((kernel - 1) / 2), as the official code computes it


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator: ``forward(x) → (logits, features)``.

    ``features`` are the outputs of ``model0`` … ``model{n_layers}`` (each after its
    LeakyReLU), the maps that feature matching compares; ``logits`` is the last stage's
    one-channel map (B × 1 × h × w).
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 4) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        self.n_layers = n_layers
        stages: list[list[nn.Module]] = [
            [nn.Conv2d(input_nc, ndf, _KERNEL, stride=2, padding=_PADDING), nn.LeakyReLU(0.2)]
        ]
        channels = ndf
        for index in range(1, n_layers + 1):
            previous, channels = channels, min(channels * 2, 512)
            stride = 2 if index < n_layers else 1  # the last feature stage keeps the resolution
            stages.append(
                [
                    nn.Conv2d(previous, channels, _KERNEL, stride=stride, padding=_PADDING),
                    nn.BatchNorm2d(channels),
                    nn.LeakyReLU(0.2),
                ]
            )
        stages.append([nn.Conv2d(channels, 1, _KERNEL, stride=1, padding=_PADDING)])
        for index, layers in enumerate(stages):
            setattr(self, f"model{index}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for index in range(self.n_layers + 2):
            x = getattr(self, f"model{index}")(x)
            features.append(x)
        return features[-1], features[:-1]


def build_discriminator(ndf: int = 64, n_layers: int = 4) -> NLayerDiscriminator:
    """Big LaMa's discriminator by default (``pix2pixhd_nlayer``, ndf 64, 4 layers)."""
    return NLayerDiscriminator(input_nc=3, ndf=ndf, n_layers=n_layers)
