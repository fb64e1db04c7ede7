"""TinyViT, MobileSAM's image encoder: convolutions first, then windowed attention, then a
neck to the decoder's width (the official ``tiny_vit_sam.py`` written as plain modules).

Why this encoder and what it costs: see ``lama_model.segment``'s docstring and
``bench/segment.py``.
"""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from lama_model.segment.config import SegmenterConfig


class Conv2d_BN(nn.Sequential):  # noqa: N801 - the official name, kept for the checkpoint keys
    """Convolution without bias then batch norm (``c``, ``bn``)."""

    def __init__(self, a: int, b: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))


@torch.no_grad()
def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold each :class:`Conv2d_BN`'s batch norm into its convolution, in place, for inference
    (the official ``Conv2d_BN.fuse``): one convolution instead of a convolution and a separate
    normalisation pass over its output, about 7 % of an encoder pass on a CPU. Its parameters
    no longer match the checkpoint's keys: fold only a model that is loaded and will not be
    saved or loaded again."""
    for block in module.modules():
        if isinstance(block, Conv2d_BN) and isinstance(block.bn, nn.BatchNorm2d):
            conv, bn = block.c, block.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
            block.bn = nn.Identity()
    return module


def gelu_fusable(x: torch.Tensor) -> bool:
    """Whether ``x`` can go through PyTorch's oneDNN operators with a fused GELU: float32
    inference on a CPU (no autograd: those operators have no backward) with a torch whose
    operators answer as this code expects (:func:`fused_gelu_works`)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.is_available()
        and fused_gelu_works()
    )


@functools.cache
def fused_gelu_works() -> bool:
    """The fused operators are torch's internal ones (those its compiler emits), not a public
    API: their names or signatures may change between the torch versions this package allows.
    Tried once on a tiny input against the plain modules; any difference means the plain path."""
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*shape, generator=g) for shape in ((1, 2, 3, 3), (4, 2, 1, 1), (4,)))
        try:
            conv = torch.ops.mkldnn._convolution_pointwise(
                x, w, b, [0, 0], [1, 1], [1, 1], 1, "gelu", [], "none"
            )
            flat = x.permute(0, 2, 3, 1).reshape(-1, 2)
            linear = torch.ops.mkldnn._linear_pointwise(flat, w.flatten(1), b, "gelu", [], "none")
        except (RuntimeError, AttributeError, TypeError):
            return False
        return torch.allclose(conv, F.gelu(F.conv2d(x, w, b)), atol=1e-5) and torch.allclose(
            linear, F.gelu(F.linear(flat, w.flatten(1), b)), atol=1e-5
        )


def conv_gelu(block: Conv2d_BN, x: torch.Tensor) -> torch.Tensor:
    """GELU(block(x)), in one pass over the output where oneDNN can fuse them.

    In inference on a CPU, with the batch norm folded, the convolution and the exact (erf)
    GELU run as one oneDNN convolution with a GELU post-op: the encoder's first stages apply
    GELU to tensors of up to 256×256×256 floats, and a separate pass over each cost about as
    much as the convolution before it; fused, the pair takes 60 to 70 % of the time (one
    thread, 256 channels at 256², a 1×1 and a depthwise 3×3 convolution). The fused
    operator is PyTorch's own (the one its compiler uses for the same fusion); elsewhere
    (training, a GPU, a build without oneDNN, batch norms not folded) the two modules run
    one after the other."""
    conv = block.c
    if isinstance(block.bn, nn.Identity) and gelu_fusable(x):
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups,
            "gelu", [], "none",
        )  # fmt: skip
    return F.gelu(block(x))


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """GELU(F.linear(x, weight, bias)) for x (…, C), fused as :func:`conv_gelu`: 50 to 80 %
    of the two passes' time for the attention stages' feed-forward layers (one thread)."""
    if gelu_fusable(x):
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "gelu", [], "none")
        return out.view(*x.shape[:-1], -1)
    return F.gelu(F.linear(x, weight, bias))


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of an (N, C, H, W) tensor, as SAM's ``LayerNorm2d``."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """Two stride-2 convolutions: the image at a quarter of its size."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, dim // 2, 3, 2, 1), nn.GELU(), Conv2d_BN(dim // 2, dim, 3, 2, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq[2](conv_gelu(self.seq[0], x))


# Rows of the first stage's image the inference path runs through MBConv at a time: at 1024²
# its expanded tensors (256 channels at 256², 64 MiB each) do not fit in any cache, and the
# convolutions wait on memory; in bands of 32 rows (8 MiB) the block ran 1.3 to 1.45 times
# as fast (MobileSAM, 2 threads, AMD EPYC with AVX2, interleaved with the whole-image pass).
BAND_ROWS = 32


class MBConv(nn.Module):
    """Inverted residual: expand, depthwise 3×3, project, add, GELU."""

    def __init__(self, dim: int, expand_ratio: float):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2d_BN(dim, hidden)
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = Conv2d_BN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] > BAND_ROWS and x.device.type == "cpu" and not torch.is_grad_enabled():
            return self.banded(x)
        return F.gelu(self.residual(x) + x)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Expand, depthwise 3×3 and project: the branch added to ``x``."""
        return self.conv3(conv_gelu(self.conv2, conv_gelu(self.conv1, x)))

    def banded(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` band by band of :data:`BAND_ROWS` rows (see there why). Each band
        is expanded with one row of its neighbours above and below, which the depthwise 3×3
        needs and which are then dropped: every output pixel sees the inputs it sees in one
        pass, and the image's own top and bottom get the convolution's zero padding."""
        height = x.shape[2]
        bands = []
        for top in range(0, height, BAND_ROWS):
            low, high = max(top - 1, 0), min(top + BAND_ROWS + 1, height)
            rows = min(BAND_ROWS, height - top)
            y = conv_gelu(self.conv2, conv_gelu(self.conv1, x[:, :, low:high]))
            bands.append(self.conv3(y[:, :, top - low : top - low + rows]))
        return F.gelu(torch.cat(bands, dim=2) + x)


class PatchMerging(nn.Module):
    """To the next stage's width; halves the grid unless ``stride`` is 1 (the last stage)."""

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int, stride: int):
        super().__init__()
        self.resolution = resolution
        self.conv1 = Conv2d_BN(dim, out_dim)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # tokens (B, L, C) from an attention stage
            h, w = self.resolution
            x = x.view(len(x), h, w, -1).permute(0, 3, 1, 2)
        x = self.conv3(conv_gelu(self.conv2, conv_gelu(self.conv1, x)))
        return x.permute(0, 2, 3, 1).flatten(1, 2)  # a view when x is channels-last


class ConvLayer(nn.Module):
    """The first stage: MBConv blocks then a patch merging."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class Mlp(nn.Module):
    """Pre-norm feed-forward (``norm``, ``fc1``, GELU, ``fc2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(linear_gelu(self.norm(x), self.fc1.weight, self.fc1.bias))


def relative_offsets(window: int) -> torch.Tensor:
    """For each pair of positions in a window, the index of their |dy|, |dx| offset
    (numbered in order of first appearance, as the official code numbers them)."""
    points = list(itertools.product(range(window), range(window)))
    numbers: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(numbers.setdefault(offset, len(numbers)))
    return torch.tensor(idxs).view(len(points), len(points))


class Attention(nn.Module):
    """Pre-norm multi-head attention within a window, with a learned bias per offset."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        idxs = relative_offsets(window)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, int(idxs.max()) + 1))
        self.register_buffer("attention_bias_idxs", idxs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        # The official layout interleaves the heads' q, k and v rows in one projection,
        # whose output then needs a transpose and a split: in OpenVINO's graph of the
        # encoder those two took 5 % of the time (a reference split kernel). Three
        # projections by the rows of q, k and v (a copy of at most 1.2 MB of weights per
        # call in torch, constants in a converted graph) give q, k and v as they are used,
        # the attention's scale in q's rows.
        weight = self.qkv.weight.view(self.num_heads, 3, self.key_dim, -1)
        bias = self.qkv.bias.view(self.num_heads, 3, self.key_dim)
        q, k, v = (
            F.linear(x, weight[:, i].flatten(0, 1) * scale, bias[:, i].flatten() * scale)
            .view(b, n, self.num_heads, self.key_dim)
            .transpose(1, 2)
            for i, scale in enumerate((self.scale, 1.0, 1.0))
        )
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = (q @ k.transpose(-2, -1) + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


def windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) → (B·nH·nW, window², C), zero-padded at the bottom and right."""
    b, h, w, c = x.shape
    pad_b, pad_r = (window - h % window) % window, (window - w % window) % window
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    nh, nw = (h + pad_b) // window, (w + pad_r) // window
    x = x.view(b, nh, window, nw, window, c).transpose(2, 3)
    return x.reshape(b * nh * nw, window * window, c), (h + pad_b, w + pad_r)


def unwindow(
    x: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """The inverse of :func:`windows`, cropped back to ``size``: (B, H·W, C)."""
    ph, pw = padded
    c = x.shape[-1]
    x = x.view(-1, ph // window, pw // window, window, window, c).transpose(2, 3)
    x = x.reshape(-1, ph, pw, c)[:, : size[0], : size[1]]
    return x.reshape(len(x), size[0] * size[1], c)


class TinyViTBlock(nn.Module):
    """Windowed attention, a depthwise 3×3 convolution, then the feed-forward."""

    def __init__(
        self, dim: int, resolution: tuple[int, int], num_heads: int, window: int, mlp_ratio: float
    ):
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, length, c = x.shape
        if (h, w) == (self.window, self.window):
            x = x + self.attn(x)
        else:
            tiles, padded = windows(x.view(b, h, w, c), self.window)
            x = x + unwindow(self.attn(tiles), self.window, padded, (h, w))
        # The tokens as a channels-last image and back by permutes (views in torch): in
        # OpenVINO's graph the encoder ran 1.05 times as fast as with the transpose and
        # reshapes before (interleaved, 2 threads, AVX2 EPYC).
        x = self.local_conv(x.view(b, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x.reshape(b, length, c)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """An attention stage: TinyViT blocks then, except the last, a patch merging."""

    def __init__(self, blocks: list[TinyViTBlock], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


def build_stage(
    config: SegmenterConfig, i: int, resolution: tuple[int, int]
) -> tuple[nn.Module, tuple[int, int]]:
    """Stage ``i`` of the encoder and the grid it hands to the next stage."""
    dims, last = config.embed_dims, i == len(config.embed_dims) - 1
    downsample, out_res = None, resolution
    if not last:
        out_dim = dims[i + 1]
        stride = 1 if out_dim in (320, 448, 576) else 2  # the official rule, see SegmenterConfig
        downsample = PatchMerging(resolution, dims[i], out_dim, stride)
        out_res = ((resolution[0] - 1) // stride + 1, (resolution[1] - 1) // stride + 1)
    if i == 0:
        return ConvLayer(dims[0], config.depths[0], config.mbconv_expand_ratio, downsample), out_res
    blocks = [
        TinyViTBlock(
            dims[i], resolution, config.num_heads[i], config.window_sizes[i], config.mlp_ratio
        )
        for _ in range(config.depths[i])
    ]
    return BasicLayer(blocks, downsample), out_res


class TinyViT(nn.Module):
    """The image encoder: (B, 3, S, S) normalised → (B, prompt_dim, S/16, S/16) features."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.img_size = config.image_size
        self.grid = config.embedding_size
        dims = config.embed_dims
        self.patch_embed = PatchEmbed(3, dims[0])
        resolution = (config.image_size // 4, config.image_size // 4)
        self.layers = nn.ModuleList()
        for i in range(len(dims)):
            stage, resolution = build_stage(config, i, resolution)
            self.layers.append(stage)
        # The ImageNet head is never run; it stays so official checkpoints load strictly.
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], config.num_classes)
        out = config.prompt_dim
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out, 1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, 3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last (the served model's weights are too, see SegmentPredictor): oneDNN's
        # convolutions take it without a reorder, about 1.6 times as fast for the first
        # stage's at 1024², and the attention stages' tokens (B, H·W, C) are that layout.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        x = x.view(len(x), self.grid, self.grid, -1).permute(0, 3, 1, 2)
        return self.neck(x)
