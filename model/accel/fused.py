"""Inference-only rewrite of the generator: BatchNorm folded away, convolutions fused.

:func:`fuse_generator` turns a trained :class:`~lama_model.net.generator.FFCResNetGenerator` into
a :class:`FusedGenerator` that computes the same function with fewer passes over memory:

- every BatchNorm (eval mode, so an affine map) is folded into the convolution before it.
  An FFC's local output ``BN(l2l(x_l) + g2l(x_g))`` becomes two scaled convolutions and one
  bias, the global output's BN is folded into ``l2g`` and the spectral transform's ``conv2``;
- activations stay channels-last (NHWC), where oneDNN's direct convolutions are fastest on
  CPUs;
- reflect padding is written by slicing into a preallocated tensor (one pass) instead of
  ``F.pad``;
- on CPU the second convolution of a sum, the add and the ReLU run as one oneDNN primitive
  (``mkldnn._convolution_pointwise``, the op ``torch.compile`` emits); elsewhere, or where
  that op is missing, plain ``conv2d`` + in-place add + ReLU compute the same.

The Fourier transforms stay float32 and in the official channel order. Results match the
eager generator to float32 rounding (folding reorders a few multiplications), which the
tests bound. Weights are copied: the source generator is left as it was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lama_model.accel.winograd import (
    input_matrix,
    input_tiles,
    output_matrix,
    output_tiles,
    pad_reflect_for_tiles,
    scatter_tiles,
    tile_grid,
    transform_weight,
)
from lama_model.devices import module_device
from lama_model.net.ffc import (
    FFC_BN_ACT,
    ConcatTupleLayer,
    FFCResnetBlock,
    FourierUnit,
    SpectralTransform,
)
from lama_model.net.generator import FFCResNetGenerator

Pair = tuple[torch.Tensor | None, torch.Tensor | None]


def _mkldnn_fusion_available() -> bool:
    """oneDNN's fused conv op exists in this build (x86/ARM builds with oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return False
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return ops is not None and hasattr(ops._convolution_pointwise, "binary")
    except (AttributeError, RuntimeError):
        return False


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``bn(y) == scale * y + shift`` per channel (eval mode)."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``F.pad(x, (pad,) * 4, mode="reflect")`` in one pass, keeping channels-last layout."""
    if pad == 0:
        return x
    batch, channels, height, width = x.shape
    if pad >= height or pad >= width:
        return F.pad(x, (pad,) * 4, mode="reflect")  # F.pad's own error for too-small inputs
    out = torch.empty(
        (batch, channels, height + 2 * pad, width + 2 * pad),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last,
    )
    out[:, :, pad:-pad, pad:-pad] = x
    for i in range(1, pad + 1):
        out[:, :, pad - i, pad:-pad] = x[:, :, i]
        out[:, :, pad + height - 1 + i, pad:-pad] = x[:, :, height - 1 - i]
    for i in range(1, pad + 1):
        out[:, :, :, pad - i] = out[:, :, :, pad + i]
        out[:, :, :, pad + width - 1 + i] = out[:, :, :, pad + width - 1 - i]
    return out


class FoldedConv(nn.Module):
    """A convolution with a folded BatchNorm: ``conv(pad(x)) [+ add] [→ ReLU]`` in one call.

    ``pad`` is applied by the caller with :func:`reflect_pad` (shared between convolutions
    that read the same input); zero padding, if the source used it, stays inside the conv.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        dilation: int,
        zero_padding: int = 0,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight.float().contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", None if bias is None else bias.float().contiguous())
        self.stride = stride
        self.dilation = dilation
        self.zero_padding = zero_padding
        self.fusion = _mkldnn_fusion_available()

    @staticmethod
    def from_conv(
        conv: nn.Conv2d, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> FoldedConv:
        """Fold ``scale * conv(x) + shift`` (a following BatchNorm) into one convolution."""
        weight = conv.weight.detach().double()
        bias = None if conv.bias is None else conv.bias.detach().double()
        if scale is not None:
            weight = weight * scale.view(-1, 1, 1, 1)
            bias = None if bias is None else bias * scale
        if shift is not None:
            bias = shift if bias is None else bias + shift
        zero_padding = conv.padding[0] if conv.padding_mode == "zeros" else 0
        return FoldedConv(weight, bias, conv.stride[0], conv.dilation[0], zero_padding)

    def forward(
        self, x: torch.Tensor, add: torch.Tensor | None = None, relu: bool = False
    ) -> torch.Tensor:
        padding = [self.zero_padding] * 2
        stride, dilation = [self.stride] * 2, [self.dilation] * 2
        if self.fusion and x.device.type == "cpu" and x.dtype == torch.float32:
            x = x.contiguous(memory_format=torch.channels_last)
            unary = "relu" if relu else "none"
            if add is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, self.weight, self.bias, padding, stride, dilation, 1, unary, [], ""
                )
            add = add.contiguous(memory_format=torch.channels_last)
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, add, self.weight, self.bias, padding, stride, dilation, 1, "add", 1.0,
                unary, [], "",
            )  # fmt: skip
        out = F.conv2d(x, self.weight.to(x.dtype), _cast(self.bias, x), stride, padding, dilation)
        if add is not None:
            out = out + add
        return out.relu_() if relu else out


def _cast(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.to(like.dtype)


class FusedFourierUnit(nn.Module):
    """:class:`~lama_model.net.ffc.FourierUnit` with its BatchNorm folded into the 1×1 conv."""

    def __init__(self, unit: FourierUnit) -> None:
        super().__init__()
        self.conv = FoldedConv.from_conv(unit.conv_layer, *bn_scale_shift(unit.bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        # The FFT is faster on NCHW here; the copy is small next to it.
        spectrum = torch.fft.rfftn(x.float().contiguous(), dim=(-2, -1), norm="ortho")
        stacked = torch.stack((spectrum.real, spectrum.imag), dim=2)
        stacked = stacked.reshape(batch, -1, height, spectrum.shape[-1]).to(x.dtype)
        stacked = self.conv(stacked, relu=True)
        pairs = stacked.reshape(batch, -1, 2, height, spectrum.shape[-1]).float()
        spectrum = torch.complex(pairs[:, :, 0], pairs[:, :, 1])
        out = torch.fft.irfftn(spectrum, s=(height, width), dim=(-2, -1), norm="ortho")
        return out.to(x.dtype).contiguous(memory_format=torch.channels_last)


class FusedSpectralInput(nn.Module):
    """The spectral transform up to its last 1×1 conv: ``s + fu(s)`` with ``s = conv1(x)``.

    The last conv (``conv2``) belongs to the enclosing FFC, which folds the global
    BatchNorm into it and fuses it with the ``l2g`` sum.
    """

    def __init__(self, spectral: SpectralTransform) -> None:
        super().__init__()
        self.downsample = spectral.downsample
        conv, bn = spectral.conv1[0], spectral.conv1[1]
        self.conv1 = FoldedConv.from_conv(conv, *bn_scale_shift(bn))
        self.fu = FusedFourierUnit(spectral.fu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv1(self.downsample(x), relu=True)
        return s.add_(self.fu(s))


class FusedFFC(nn.Module):
    """:class:`~lama_model.net.ffc.FFC_BN_ACT` with its BatchNorms folded and sums fused."""

    def __init__(self, layer: FFC_BN_ACT) -> None:
        super().__init__()
        ffc = layer.ffc
        convs = [m for m in (ffc.convl2l, ffc.convl2g, ffc.convg2l) if isinstance(m, nn.Conv2d)]
        if any(c.padding_mode not in ("zeros", "reflect") for c in convs):
            raise ValueError("only zero and reflect padding can be fused")
        reflect = [c.padding[0] for c in convs if c.padding_mode == "reflect"]
        self.pad = reflect[0] if reflect else 0
        local_bn = bn_scale_shift(layer.bn_l) if isinstance(layer.bn_l, nn.BatchNorm2d) else None
        global_bn = bn_scale_shift(layer.bn_g) if isinstance(layer.bn_g, nn.BatchNorm2d) else None
        self.l2l = self.g2l = self.l2g = self.conv2 = None
        self.spectral = None
        if local_bn is not None:
            scale, shift = local_bn
            # The shift (BN bias) goes on whichever conv runs first.
            first = True
            for name, conv in (("l2l", ffc.convl2l), ("g2l", ffc.convg2l)):
                if isinstance(conv, nn.Conv2d):
                    folded = FoldedConv.from_conv(conv, scale, shift if first else None)
                    setattr(self, name, folded)
                    first = False
        if global_bn is not None:
            scale, shift = global_bn
            if isinstance(ffc.convl2g, nn.Conv2d):
                self.l2g = FoldedConv.from_conv(ffc.convl2g, scale, shift)
            if isinstance(ffc.convg2g, SpectralTransform):
                self.spectral = FusedSpectralInput(ffc.convg2g)
                self.conv2 = FoldedConv.from_conv(
                    ffc.convg2g.conv2, scale, None if self.l2g is not None else shift
                )

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = x
        p_l = reflect_pad(x_l, self.pad) if x_l is not None else None
        p_g = reflect_pad(x_g, self.pad) if x_g is not None and self.g2l is not None else None
        out_l = self._sum((self.l2l, p_l), (self.g2l, p_g))
        spectral = self.spectral(x_g) if self.spectral is not None and x_g is not None else None
        out_g = self._sum((self.l2g, p_l), (self.conv2, spectral))
        return out_l, out_g

    @staticmethod
    def _sum(*terms: tuple[FoldedConv | None, torch.Tensor | None]) -> torch.Tensor | None:
        """``ReLU(Σ conv(x))`` over the terms that exist, the last conv fused with the sum."""
        live = [(conv, x) for conv, x in terms if conv is not None and x is not None]
        if not live:
            return None
        acc: torch.Tensor | None = None
        for i, (conv, x) in enumerate(live):
            acc = conv(x, add=acc, relu=i == len(live) - 1)
        return acc


class FusedResnetBlock(nn.Module):
    """:class:`~lama_model.net.ffc.FFCResnetBlock`: two fused FFC layers plus the residual."""

    def __init__(self, block: FFCResnetBlock) -> None:
        super().__init__()
        self.conv1 = FusedFFC(block.conv1)
        self.conv2 = FusedFFC(block.conv2)

    def forward(self, x: Pair) -> Pair:
        y_l, y_g = self.conv2(self.conv1(x))
        x_l, x_g = x
        return _residual(x_l, y_l), _residual(x_g, y_g)


def _residual(x: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor | None:
    if x is None:
        return y
    if y is None:
        return x
    return y.add_(x)


def _plain_cpu_float32(x: torch.Tensor) -> bool:
    """True where the CPU-only kernels apply: float32 on the CPU, autocast off."""
    return (
        x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    )


def winograd_eligible(block: FFCResnetBlock) -> bool:
    """Whether both layers of ``block`` have the shape :class:`WinogradFFC` handles."""
    for layer in (block.conv1, block.conv2):
        ffc = layer.ffc
        convs = (ffc.convl2l, ffc.convl2g, ffc.convg2l)
        if not all(isinstance(c, nn.Conv2d) for c in convs):
            return False
        if not isinstance(ffc.convg2g, SpectralTransform):
            return False
        if not isinstance(ffc.convg2g.downsample, nn.Identity):
            return False
        for c in convs:
            if (c.kernel_size, c.stride, c.dilation, c.padding) != ((3, 3), (1, 1), (1, 1), (1, 1)):
                return False
            if c.padding_mode != "reflect" or c.bias is not None or c.groups != 1:
                return False
        if ffc.convl2l.in_channels != ffc.convl2l.out_channels:
            return False
        if ffc.convg2l.in_channels != ffc.convl2g.out_channels:
            return False
    return True


def _matrix(conv: nn.Conv2d, scale: torch.Tensor) -> torch.Tensor:
    """A 1×1 conv with a folded BatchNorm scale as an ``(in, out)`` float32 matrix."""
    weight = conv.weight.detach().double()[:, :, 0, 0] * scale.view(-1, 1)
    return weight.t().float().contiguous()


class WinogradFFC(nn.Module):
    """A residual-block FFC layer on one ``(B, H, W, local + global)`` tensor, CPU float32.

    The three 3×3 paths run as Winograd F(4,3): one input transform of the whole tensor,
    one batched GEMM for the local output (``l2l`` and ``g2l`` stacked on the input axis)
    and one for ``l2g``, which reads only the local channels. The spectral transform's
    1×1 convolutions are GEMMs on the channels-last matrix; BatchNorms are folded.
    """

    def __init__(self, layer: FFC_BN_ACT) -> None:
        super().__init__()
        ffc = layer.ffc
        scale_l, shift_l = bn_scale_shift(layer.bn_l)
        scale_g, shift_g = bn_scale_shift(layer.bn_g)
        local = torch.cat((ffc.convl2l.weight, ffc.convg2l.weight), dim=1).detach().double()
        self.local = ffc.convl2l.out_channels
        self.register_buffer("u_local", transform_weight(local * scale_l.view(-1, 1, 1, 1)))
        l2g = ffc.convl2g.weight.detach().double() * scale_g.view(-1, 1, 1, 1)
        self.register_buffer("u_l2g", transform_weight(l2g))
        self.register_buffer("bias", torch.cat((shift_l, shift_g)).float())
        spectral = ffc.convg2g
        scale_1, shift_1 = bn_scale_shift(spectral.conv1[1])
        self.register_buffer("w1", _matrix(spectral.conv1[0], scale_1))
        self.register_buffer("b1", shift_1.float())
        scale_f, shift_f = bn_scale_shift(spectral.fu.bn)
        # Used as W @ x on (2C, H·W') spectra, so kept (out, in).
        self.register_buffer("wf", _matrix(spectral.fu.conv_layer, scale_f).t().contiguous())
        self.register_buffer("bf", shift_f.float().view(-1, 1))
        self.register_buffer("w2", _matrix(spectral.conv2, scale_g))
        self.register_buffer("bt", input_matrix())
        self.register_buffer("at", output_matrix())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        local = self.local
        th, tw = tile_grid(height, width)
        tiles = input_tiles(pad_reflect_for_tiles(x), self.bt)
        out = x.new_empty((batch, 4 * th, 4 * tw, channels))
        products = torch.bmm(tiles, self.u_local)
        scatter_tiles(output_tiles(products, self.at), out[..., :local], batch, th, tw)
        products = torch.bmm(tiles[:, :, :local], self.u_l2g)
        scatter_tiles(output_tiles(products, self.at), out[..., local:], batch, th, tw)
        del tiles, products
        if out.shape[1:3] != (height, width):
            out = out[:, :height, :width].contiguous()
        flat = out.view(-1, channels)
        s = torch.addmm(self.b1, x.view(-1, channels)[:, local:], self.w1).relu_()
        s = s.add_(self._fourier(s, batch, height, width))
        flat[:, local:].addmm_(s, self.w2)
        flat.add_(self.bias).relu_()
        return out

    def _fourier(self, s: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        """The Fourier unit on ``(B·H·W, C)``; returns ``(B·H·W, C)``."""
        channels = s.shape[1]
        # The FFT is faster on NCHW here; the copy is small next to it.
        nchw = s.view(batch, height, width, channels).permute(0, 3, 1, 2).contiguous()
        spectrum = torch.fft.rfftn(nchw, dim=(-2, -1), norm="ortho")
        half = spectrum.shape[-1]
        # Interleaved re/im per channel, the order the released 1×1 weights expect.
        stacked = torch.stack((spectrum.real, spectrum.imag), dim=2).view(batch, 2 * channels, -1)
        mixed = torch.matmul(self.wf, stacked).add_(self.bf).relu_()
        pairs = mixed.view(batch, channels, 2, height, half)
        spectrum = torch.complex(pairs[:, :, 0], pairs[:, :, 1])
        out = torch.fft.irfftn(spectrum, s=(height, width), dim=(-2, -1), norm="ortho")
        return out.permute(0, 2, 3, 1).reshape(-1, channels)


class FusedBottleneck(nn.Module):
    """The run of residual blocks; returns the local and global parts concatenated.

    With ``winograd`` (built for CPU float32), the blocks run as :class:`WinogradFFC` pairs
    on one channels-last tensor; otherwise as :class:`FusedResnetBlock`.
    """

    def __init__(self, blocks: list[FFCResnetBlock], winograd: bool) -> None:
        super().__init__()
        self.winograd = winograd
        if winograd:
            self.blocks = nn.ModuleList(
                nn.ModuleList((WinogradFFC(b.conv1), WinogradFFC(b.conv2))) for b in blocks
            )
        else:
            self.blocks = nn.ModuleList(FusedResnetBlock(b) for b in blocks)

    def forward(self, x: Pair) -> torch.Tensor:
        if not self.winograd:
            state = x
            for block in self.blocks:
                state = block(state)
            return FusedConcat()(state)
        x_l, x_g = x
        assert x_l is not None and x_g is not None
        if not _plain_cpu_float32(x_l):
            raise RuntimeError(
                "this fused model was built for CPU float32 (Winograd); "
                "build it with fuse_generator(..., winograd=False) for other devices"
            )
        state = torch.cat((x_l, x_g), dim=1).contiguous(memory_format=torch.channels_last)
        nhwc = state.permute(0, 2, 3, 1)
        for first, second in self.blocks:
            nhwc = second(first(nhwc)).add_(nhwc)
        return nhwc.permute(0, 3, 1, 2)


class FusedConvTranspose(nn.Module):
    """``ConvTranspose2d → BatchNorm → ReLU`` of the decoder with the BatchNorm folded."""

    def __init__(self, conv: nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        scale, shift = bn_scale_shift(bn)
        # ConvTranspose2d weights are (in, out, kh, kw): the output channel is dim 1.
        weight = conv.weight.detach().double() * scale.view(1, -1, 1, 1)
        bias = shift if conv.bias is None else conv.bias.detach().double() * scale + shift
        self.register_buffer("weight", weight.float().contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias.float())
        self.stride = conv.stride
        self.padding = conv.padding
        self.output_padding = conv.output_padding
        self.dilation = conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(
            x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.stride, self.padding,
            self.output_padding, 1, self.dilation,
        )  # fmt: skip
        return out.relu_()


class FusedGenerator(nn.Module):
    """Same function as the generator it was built from, for inference only.

    Build it with :func:`fuse_generator`. Input and output as
    :class:`~lama_model.net.generator.FFCResNetGenerator`: ``(B, 4, H, W)`` → ``(B, 3, H, W)``.
    """

    def __init__(
        self, stages: list[nn.Module], size_multiple: int, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self._size_multiple = size_multiple
        self.dtype = dtype

    @property
    def size_multiple(self) -> int:
        return self._size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state: Pair | torch.Tensor = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        for stage in self.stages:
            state = stage(state)
        return state.contiguous()  # type: ignore[union-attr]


class FusedHead(nn.Module):
    """The first FFC layer takes a plain tensor (all-local input)."""

    def __init__(self, pad: int, layer: FFC_BN_ACT) -> None:
        super().__init__()
        self.pad = pad
        self.ffc = FusedFFC(layer)

    def forward(self, x: torch.Tensor) -> Pair:
        return self.ffc((reflect_pad(x, self.pad), None))


class FusedConcat(nn.Module):
    """The local and global halves joined into one tensor, before the decoder."""

    def forward(self, x: Pair | torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x  # the bottleneck already concatenated
        x_l, x_g = x
        if x_g is None or x_l is None:
            return x_l if x_g is None else x_g  # type: ignore[return-value]
        return torch.cat((x_l, x_g), dim=1)


class FusedTail(nn.Module):
    """Reflect pad → conv → output activation."""

    def __init__(self, pad: int, conv: nn.Conv2d, activation: nn.Module | None) -> None:
        super().__init__()
        self.pad = pad
        self.conv = FoldedConv.from_conv(conv)
        self.activation = activation if activation is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The output layer runs in its weights' dtype (float32 in a reduced-precision
        # model): the sigmoid's last digits are the 8-bit levels users see.
        x = x.to(self.conv.weight.dtype)
        return self.activation(self.conv(reflect_pad(x, self.pad))).float()


def fuse_generator(
    generator: FFCResNetGenerator,
    winograd: bool | None = None,
    dtype: torch.dtype = torch.float32,
) -> FusedGenerator:
    """Build the fused inference form of ``generator`` (which is left unchanged).

    ``winograd``: run the residual blocks as Winograd F(4,3) (CPU float32 only; their
    weights take 4× the memory of the 3×3 kernels, about 600 MB for Big LaMa). Default: on
    when ``generator`` is on the CPU and ``dtype`` is float32. ``dtype``: ``torch.bfloat16``
    or ``torch.float16`` build a native reduced-precision model: weights cast once (no
    autocast re-casting them every call), activations in ``dtype``, the Fourier transforms
    and the output layer in float32. Raises ``ValueError`` for a layer sequence other than
    the LaMa generator's or a Winograd request in reduced precision.
    """
    reduced = dtype != torch.float32
    if reduced and winograd:
        raise ValueError("the Winograd blocks are float32 only")
    if reduced:
        winograd = False
    device = module_device(generator)
    if winograd is None:
        winograd = device.type == "cpu"
    with torch.no_grad():
        stages = _fused_stages(_LayerReader(list(generator.model)), winograd)
    if reduced:
        for stage in stages[:-1]:  # the output layer stays float32
            stage.to(dtype)
    return FusedGenerator(stages, generator.size_multiple, dtype).to(device)


class _LayerReader:
    """The generator's layers, taken in order; a layer of another kind than expected is an
    error (the rewrite knows the LaMa generator's sequence only)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        self.layers = layers
        self.index = 0

    def next_is(self, kind: type[nn.Module]) -> bool:
        return self.index < len(self.layers) and isinstance(self.layers[self.index], kind)

    def take(self, kind: type[nn.Module]) -> nn.Module:
        if not self.next_is(kind):
            i = self.index
            found = type(self.layers[i]).__name__ if i < len(self.layers) else "the end"
            raise ValueError(f"cannot fuse: expected {kind.__name__} at layer {i}, found {found}")
        self.index += 1
        return self.layers[self.index - 1]

    def rest(self) -> nn.Module | None:
        return self.layers[self.index] if self.index < len(self.layers) else None


def _fused_stages(layers: _LayerReader, winograd: bool) -> list[nn.Module]:
    """The fused stages of a LaMa generator: head, downsamplings, the residual blocks as one
    bottleneck, concatenation, upsamplings, tail."""
    pad = layers.take(nn.ReflectionPad2d).padding[0]
    stages: list[nn.Module] = [FusedHead(pad, layers.take(FFC_BN_ACT))]
    while layers.next_is(FFC_BN_ACT):
        stages.append(FusedFFC(layers.take(FFC_BN_ACT)))
    blocks = []
    while layers.next_is(FFCResnetBlock):
        blocks.append(layers.take(FFCResnetBlock))
    if blocks:
        winograd = winograd and all(winograd_eligible(b) for b in blocks)
        stages.append(FusedBottleneck(blocks, winograd))
    layers.take(ConcatTupleLayer)
    stages.append(FusedConcat())
    while layers.next_is(nn.ConvTranspose2d):
        conv = layers.take(nn.ConvTranspose2d)
        bn = layers.take(nn.BatchNorm2d)
        layers.take(nn.ReLU)
        stages.append(FusedConvTranspose(conv, bn))
    pad = layers.take(nn.ReflectionPad2d).padding[0]
    conv = layers.take(nn.Conv2d)
    activation = layers.rest()
    if activation is not None and not isinstance(activation, nn.Sigmoid | nn.Tanh):
        raise ValueError(f"cannot fuse: unexpected {type(activation).__name__} at the end")
    stages.append(FusedTail(pad, conv, activation))
    return stages


__all__ = [
    "FoldedConv",
    "FusedGenerator",
    "FusedHead",
    "FusedTail",
    "bn_scale_shift",
    "fuse_generator",
    "reflect_pad",
]
