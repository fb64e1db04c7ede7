"""LPIPS as the official LaMa evaluator computes it: ``net-lin`` on VGG-16, version 0.1.

The official ``LPIPSScore`` (``saicinpainting/evaluation/losses/base_loss.py``) builds
``PerceptualLoss(model='net-lin', net='vgg')`` from Zhang et al.'s PerceptualSimilarity code:
images in [0, 1] are mapped to [-1, 1], shifted and scaled per channel, run through the
convolutional part of torchvision's VGG-16, and at the five ReLUs ``relu1_2 … relu5_3`` the
channel-normalised feature differences are squared, weighted by a learned 1×1 convolution,
averaged over space and summed over layers.

The weights live apart (:func:`load_lpips_weights`): torchvision's ImageNet VGG-16 and the
LPIPS v0.1 linear layers, both pinned in :mod:`lama_model.weights.downloads`. The module names
follow torchvision (``features.N``) so that torchvision's file loads as it is.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: VGG-16 ``features``: output channels of each 3×3 convolution, ``M`` for a 2×2 max-pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
#: Index in ``features`` after which LPIPS taps a feature map (relu1_2 … relu5_3).
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# The per-channel shift and scale of LPIPS v0.1's ScalingLayer, applied to [-1, 1] images.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORMALIZE_EPS = 1e-10  # LPIPS's normalize_tensor: x / (‖x‖ + eps) across channels


def vgg16_features() -> nn.Sequential:
    """The convolutional part of VGG-16 up to ``relu5_3``, indexed as torchvision's."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """Learned perceptual distance between two batches of images in [0, 1] (lower: closer)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE)[None, :, None, None])
        self.features = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at the five LPIPS layers of an image batch in [-1, 1]."""
        x = (x - self.shift) / self.scale
        found = []
        for index, layer in enumerate(self.features[: LPIPS_TAPS[-1] + 1]):
            x = layer(x)
            if index in LPIPS_TAPS:
                found.append(x)
        return found

    def forward(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Per-image distance, shape ``(B,)``.

        The argument order is the official one (``PerceptualLoss`` calls ``model(target,
        pred)``): the distance is symmetric, but float32 sums are not, and this keeps our
        numbers equal to the official evaluator's to the last bit where the kernels allow.
        """
        total = None
        pairs = zip(self.taps(2 * target - 1), self.taps(2 * pred - 1), strict=True)
        for lin, (a, b) in zip(self.lins, pairs, strict=True):
            a = a / (torch.sqrt(torch.sum(a**2, dim=1, keepdim=True)) + NORMALIZE_EPS)
            b = b / (torch.sqrt(torch.sum(b**2, dim=1, keepdim=True)) + NORMALIZE_EPS)
            layer = lin((a - b) ** 2).mean([2, 3], keepdim=True)
            total = layer if total is None else total + layer
        return total.flatten()


def lpips_state_from_files(vgg16: Path, linear: Path) -> dict[str, torch.Tensor]:
    """Our state dict from torchvision's ``vgg16-*.pth`` and LPIPS's ``v0.1/vgg.pth``."""
    vgg = torch.load(vgg16, map_location="cpu", weights_only=True)
    lins = torch.load(linear, map_location="cpu", weights_only=True)
    state = {k: v for k, v in vgg.items() if k.startswith("features.")}
    # LPIPS names its layers lin0.model.1.weight (index 1: after a Dropout, idle in eval mode)
    state.update({f"lins.{i}.weight": lins[f"lin{i}.model.1.weight"] for i in range(5)})
    return state


def load_lpips_weights(model: LPIPS, vgg16: Path, linear: Path) -> LPIPS:
    """Load the released weights into ``model``; every tensor must be present."""
    state = lpips_state_from_files(vgg16, linear)
    state.update(shift=model.shift, scale=model.scale)
    model.load_state_dict(state, strict=True)
    return model
