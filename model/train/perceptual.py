"""LaMa's high-receptive-field perceptual loss (ResNetPL) and the network it measures with.

The network is the encoder of the ADE20k scene-parsing model ``resnet50dilated-ppm_deepsup``
(CSAIL semantic-segmentation-pytorch): a ResNet-50 with a "deep stem" (three 3×3 convs instead of
one 7×7) whose last two stages keep stride 8 and dilate their 3×3 convs by 2 and 4 instead of
downsampling, so layer2…layer4 all see a 32×32 map of a 256×256 image with a very wide
receptive field. Its weights (``encoder_epoch_20.pth``) are not ours to ship;
:func:`load_resnet_pl_encoder` reads the official file.

Mode matters: the official training runs the encoder in **train mode** (Lightning's
``model.train()`` undoes the ``eval()`` in ResNetPL's constructor), so its BatchNorms normalise
with the statistics of each batch. :class:`ResNetPL` follows the mode of the module it sits in.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGE_BLOCKS = (3, 4, 6, 3)  # ResNet-50


class Bottleneck(nn.Module):
    """ResNet bottleneck (1×1 → 3×3 → 1×1, ×4 expansion), with an optional dilated 3×3."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:  # fmt: skip
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation,
                               bias=False)  # fmt: skip
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def _stage(inplanes: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    """One ResNet stage. With dilation the stride is dropped; as in the CSAIL code, the first
    block's 3×3 conv then uses half the stage's dilation (it was the strided one)."""
    downsample = None
    if stride != 1 or inplanes != planes * 4:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * 4),
        )
    first_dilation = max(dilation // 2, 1)
    layers = [Bottleneck(inplanes, planes, stride, first_dilation, downsample)]
    layers += [Bottleneck(planes * 4, planes, 1, dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class DilatedResNet50(nn.Module):
    """The ADE20k ``resnet50dilated`` encoder (output stride 8).

    ``forward(x)`` takes an ImageNet-normalised batch and returns the four stage outputs
    ``[layer1, layer2, layer3, layer4]`` (for 256×256: 256×64², 512×32², 1024×32², 2048×32²).
    State-dict keys are the official encoder file's (``conv1.weight`` … ``layer4.2.bn3.*``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(128, 64, STAGE_BLOCKS[0], stride=1, dilation=1)
        self.layer2 = _stage(256, 128, STAGE_BLOCKS[1], stride=2, dilation=1)
        self.layer3 = _stage(512, 256, STAGE_BLOCKS[2], stride=1, dilation=2)
        self.layer4 = _stage(1024, 512, STAGE_BLOCKS[3], stride=1, dilation=4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


def resnet_pl_keys() -> list[str]:
    """The encoder's state-dict keys in order (330 entries, 23,631,808 parameters)."""
    return list(DilatedResNet50().state_dict())


RESNET_PL_KEYS: tuple[str, ...] = tuple(resnet_pl_keys())


class ResNetPLError(ValueError):
    """An encoder file that cannot be used, with the reason in the message."""


def load_resnet_pl_encoder(path: str | Path) -> DilatedResNet50:
    """Load ``encoder_epoch_20.pth`` (the ADE20k resnet50dilated encoder) safely.

    Accepts the official file (a plain state_dict, optionally wrapped in ``state_dict`` or with
    a ``module.`` prefix) and our checkpoints' ``loss_resnet_pl.impl.*`` entries. Extra entries
    are ignored, as the official non-strict load does; missing weights or wrong shapes are
    errors. ``num_batches_tracked`` is optional (old files lack it).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ResNetPLError(f"{path}: no such file (the ADE20k resnet50dilated encoder weights)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ResNetPLError(f"{path}: not a readable PyTorch weights file ({first})") from exc
    state = _encoder_entries(obj, path)
    encoder = DilatedResNet50()
    expected = encoder.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ResNetPLError(
            f"{path}: not the ADE20k resnet50dilated encoder: {len(missing)} weights missing "
            f"(e.g. {', '.join(missing[:3])})"
        )
    for key, tensor in expected.items():
        if key in state and tuple(state[key].shape) != tuple(tensor.shape):
            raise ResNetPLError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
            )
    encoder.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return encoder


def _encoder_entries(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ResNetPLError(f"{path}: expected a state_dict, found {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ("loss_resnet_pl.impl.", "impl.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        out[key] = value
    return out


class ResNetPL(nn.Module):
    """High-receptive-field perceptual loss, ``weight · Σ_k mean((Φ_k(n(p)) − Φ_k(n(t)))²)``.

    ``n`` is ImageNet normalisation, Φ_1…Φ_4 the encoder's stage outputs; the four MSEs are
    summed, not averaged. The encoder is kept as ``impl`` (checkpoint keys
    ``loss_resnet_pl.impl.*``, as the release has) and is frozen. ``encoder(x)`` must return the
    list of feature maps of an already-normalised batch.
    """

    def __init__(self, weight: float = 30.0, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.impl = encoder if encoder is not None else DilatedResNet50()
        for parameter in self.impl.parameters():
            parameter.requires_grad_(False)
        self.weight = weight
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def layer_losses(self, pred: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        """The unweighted per-stage MSEs. Two separate encoder calls (separate batch stats)."""
        mean, std = self.mean.to(pred), self.std.to(pred)
        pred_features = self.impl((pred - mean) / std)
        target_features = self.impl((target - mean) / std)
        return [F.mse_loss(p, t) for p, t in zip(pred_features, target_features, strict=True)]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.layer_losses(pred, target)).sum() * self.weight
