"""Fast Fourier Convolution building blocks of the LaMa generator.

Module and attribute names mirror the official release (advimman/lama) so that a released
``state_dict`` loads key for key. Tensors flow as a ``(local, global)`` pair; a part with no
channels is the integer ``0``, as in the official code, so empty paths cost nothing.
"""

from __future__ import annotations

import torch
from torch import nn

Part = torch.Tensor | int
FeaturePair = tuple[Part, Part]


class FourierUnit(nn.Module):
    """Pointwise convolution in the frequency domain: rfft2 → 1×1 conv + BN + ReLU → irfft2.

    The spectrum's real and imaginary parts are interleaved per input channel
    (``[c0.re, c0.im, c1.re, …]``), which is what the released 1×1 weights expect.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(in_channels * 2, out_channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels * 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        # FFTs run in float32 at least: half-precision cuFFT only takes power-of-two sizes and
        # overflows on released weights. float64 stays float64 (training checks in float64).
        fft_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        spectrum = torch.fft.rfftn(x.to(fft_dtype), dim=(-2, -1), norm="ortho")
        # (B, C, H, W', 2) → (B, C, 2, H, W') → (B, 2C, H, W'): interleaved re/im per channel.
        stacked = torch.stack((spectrum.real, spectrum.imag), dim=2)
        stacked = stacked.reshape(batch, -1, height, spectrum.shape[-1]).to(x.dtype)
        stacked = self.relu(self.bn(self.conv_layer(stacked)))
        pairs = stacked.reshape(batch, -1, 2, height, spectrum.shape[-1]).to(fft_dtype)
        spectrum = torch.complex(pairs[:, :, 0], pairs[:, :, 1])
        out = torch.fft.irfftn(spectrum, s=(height, width), dim=(-2, -1), norm="ortho")
        return out.to(x.dtype)


class SpectralTransform(nn.Module):
    """Global branch of an FFC: 1×1 reduce, Fourier unit with a residual, 1×1 expand."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.downsample = nn.AvgPool2d(2, stride=2) if stride == 2 else nn.Identity()
        half = out_channels // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, half, kernel_size=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(half, half)
        self.conv2 = nn.Conv2d(half, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.downsample(x))
        return self.conv2(x + self.fu(x))


def split_channels(channels: int, ratio: float) -> tuple[int, int]:
    """Split ``channels`` into ``(local, global)`` the way the official code does."""
    global_channels = int(channels * ratio)
    return channels - global_channels, global_channels


class FFC(nn.Module):
    """Fast Fourier Convolution: four paths between the local and global channel parts."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__()
        in_l, in_g = split_channels(in_channels, ratio_gin)
        out_l, out_g = split_channels(out_channels, ratio_gout)
        self.ratio_gin = ratio_gin
        self.ratio_gout = ratio_gout
        self.global_in_num = in_g

        def conv(cin: int, cout: int) -> nn.Module:
            if cin == 0 or cout == 0:
                return nn.Identity()
            return nn.Conv2d(
                cin,
                cout,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=False,
                padding_mode=padding_mode,
            )

        self.convl2l = conv(in_l, out_l)
        self.convl2g = conv(in_l, out_g)
        self.convg2l = conv(in_g, out_l)
        self.convg2g = (
            SpectralTransform(in_g, out_g, stride) if in_g > 0 and out_g > 0 else nn.Identity()
        )

    def forward(self, x: FeaturePair | torch.Tensor) -> FeaturePair:
        x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        out_l: Part = 0
        out_g: Part = 0
        if self.ratio_gout != 1:
            out_l = _add(_apply(self.convl2l, x_l), _apply(self.convg2l, x_g))
        if self.ratio_gout != 0:
            out_g = _add(_apply(self.convl2g, x_l), _apply(self.convg2g, x_g))
        return out_l, out_g


def _apply(module: nn.Module, x: Part) -> Part:
    """Run a path; an empty (Identity) path contributes nothing."""
    if isinstance(module, nn.Identity) or isinstance(x, int):
        return 0
    return module(x)


def _add(a: Part, b: Part) -> Part:
    if isinstance(a, int):
        return b
    if isinstance(b, int):
        return a
    return a + b


class FFC_BN_ACT(nn.Module):  # noqa: N801 - the official name, kept for recognisability
    """FFC followed by BatchNorm and ReLU on each non-empty part."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.ffc = FFC(
            in_channels,
            out_channels,
            kernel_size,
            ratio_gin,
            ratio_gout,
            stride=stride,
            padding=padding,
            dilation=dilation,
            padding_mode=padding_mode,
        )
        out_l, out_g = split_channels(out_channels, ratio_gout)
        self.bn_l = nn.BatchNorm2d(out_l) if ratio_gout != 1 else nn.Identity()
        self.bn_g = nn.BatchNorm2d(out_g) if ratio_gout != 0 else nn.Identity()
        self.act_l = nn.ReLU(inplace=True) if ratio_gout != 1 else nn.Identity()
        self.act_g = nn.ReLU(inplace=True) if ratio_gout != 0 else nn.Identity()

    def forward(self, x: FeaturePair | torch.Tensor) -> FeaturePair:
        x_l, x_g = self.ffc(x)
        if not isinstance(x_l, int):
            x_l = self.act_l(self.bn_l(x_l))
        if not isinstance(x_g, int):
            x_g = self.act_g(self.bn_g(x_g))
        return x_l, x_g


class FFCResnetBlock(nn.Module):
    """Two 3×3 FFC_BN_ACT layers with a residual connection on each part."""

    def __init__(self, dim: int, ratio_gin: float, ratio_gout: float, dilation: int = 1) -> None:
        super().__init__()
        kwargs = dict(padding=dilation, dilation=dilation, padding_mode="reflect")
        self.conv1 = FFC_BN_ACT(dim, dim, 3, ratio_gin, ratio_gout, **kwargs)
        self.conv2 = FFC_BN_ACT(dim, dim, 3, ratio_gin, ratio_gout, **kwargs)

    def forward(self, x: FeaturePair | torch.Tensor) -> FeaturePair:
        x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        y_l, y_g = self.conv2(self.conv1((x_l, x_g)))
        return _add(x_l, y_l), _add(x_g, y_g)


class ConcatTupleLayer(nn.Module):
    """Join the (local, global) pair on the channel axis, local first."""

    def forward(self, x: FeaturePair | torch.Tensor) -> torch.Tensor:
        if not isinstance(x, tuple):
            return x
        x_l, x_g = x
        if isinstance(x_g, int):
            return x_l
        if isinstance(x_l, int):
            return x_g
        return torch.cat((x_l, x_g), dim=1)
