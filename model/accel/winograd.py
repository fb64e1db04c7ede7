"""Winograd F(4×4, 3×3) convolution on channels-last tensors, for the CPU path.

A 3×3 convolution computed on 6×6 input tiles that produce 4×4 outputs needs 36
multiplications per tile and channel pair instead of 144: four times fewer. The tiles'
transforms are small fixed matrices applied as GEMMs; the 36 channel-mixing products are one
batched GEMM. On the 2-core AVX2 CPU of this project that makes the generator's 3×3
convolutions about twice as fast as oneDNN's direct ones (``bench/speed.py``). The transforms
use the interpolation points 0, ±1, ±2 (Lavin and Gray, 2016); in float32 the result differs
from a direct convolution by about 1e-5 relative, far below one 8-bit level.

Everything here works on ``(B, H, W, C)`` contiguous tensors (a channels-last NCHW tensor
permuted), computes cross-correlation like ``torch.nn.functional.conv2d``, and takes an
input that is already padded.
"""

from __future__ import annotations

import torch

TILE = 4  # outputs per tile side
WINDOW = TILE + 2  # inputs per tile side (3×3 kernel)

# Input transform Bᵀ, kernel transform G, output transform Aᵀ for F(4, 3).
_BT = (
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
_AT = (
    (1, 1, 1, 1, 1, 0),
    (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0),
    (0, 1, -1, 8, -8, 1),
)


def input_matrix(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Bᵀ (6×6)."""
    return torch.tensor(_BT, dtype=dtype)


def output_matrix(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Aᵀ (4×6)."""
    return torch.tensor(_AT, dtype=dtype)


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(C_out, C_in, 3, 3)`` conv weight → ``(36, C_in, C_out)`` float32 Winograd weight.

    Computed in float64 so the only float32 rounding is the final one.
    """
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"Winograd F(4,3) needs a 3×3 kernel, not {tuple(weight.shape[-2:])}")
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ia,ocab,jb->ijco", g, weight.detach().cpu().double(), g)
    return u.reshape(WINDOW * WINDOW, weight.shape[1], weight.shape[0]).float().contiguous()


def tile_grid(height: int, width: int) -> tuple[int, int]:
    """Number of 4×4 output tiles along each side for an ``height × width`` output."""
    return -(-height // TILE), -(-width // TILE)


def pad_reflect_for_tiles(x: torch.Tensor) -> torch.Tensor:
    """Reflect-pad ``(B, H, W, C)`` by one pixel, then zero-pad to whole tiles.

    The result is ``(B, 4·th + 2, 4·tw + 2, C)``; the zero border only feeds outputs that
    are cropped away.
    """
    batch, height, width, channels = x.shape
    if height < 2 or width < 2:
        raise ValueError(f"reflect padding needs at least 2×2 pixels, got {height}×{width}")
    th, tw = tile_grid(height, width)
    out = x.new_empty((batch, TILE * th + 2, TILE * tw + 2, channels))
    out[:, 1 : height + 1, 1 : width + 1] = x
    out[:, 0, 1 : width + 1] = x[:, 1]
    out[:, height + 1, 1 : width + 1] = x[:, height - 2]
    out[:, : height + 2, 0] = out[:, : height + 2, 2]
    out[:, : height + 2, width + 1] = out[:, : height + 2, width - 1]
    out[:, height + 2 :] = 0
    out[:, :, width + 2 :] = 0
    return out


def input_tiles(padded: torch.Tensor, bt: torch.Tensor) -> torch.Tensor:
    """Transformed input tiles ``(36, B·th·tw, C)`` of a :func:`pad_reflect_for_tiles` result."""
    batch, hp, wp, channels = padded.shape
    th, tw = (hp - 2) // TILE, (wp - 2) // TILE
    s_b, s_h, s_w, _ = padded.stride()
    # (a, b, batch, tile row, tile col, channel): a, b index the 6×6 window. One gather copy.
    d = padded.as_strided(
        (WINDOW, WINDOW, batch, th, tw, channels),
        (s_h, s_w, s_b, TILE * s_h, TILE * s_w, 1),
    ).contiguous()
    n = batch * th * tw * channels
    # Bᵀ d B as two small GEMMs: over a (rows of the window), then over b (columns).
    rows = (bt @ d.view(WINDOW, WINDOW * n)).view(WINDOW, WINDOW, n)
    both = torch.matmul(bt, rows)
    return both.view(WINDOW * WINDOW, batch * th * tw, channels)


def output_tiles(products: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """``Aᵀ M A`` of ``(36, T, C)`` products → ``(4, 4, T, C)`` output tiles."""
    _, tiles, channels = products.shape
    n = tiles * channels
    rows = (at @ products.view(WINDOW, WINDOW * n)).view(TILE, WINDOW, n)
    return torch.matmul(at, rows).view(TILE, TILE, tiles, channels)


def scatter_tiles(tiles: torch.Tensor, out: torch.Tensor, batch: int, th: int, tw: int) -> None:
    """Write ``(4, 4, B·th·tw, C')`` tiles into ``out`` of shape ``(B, 4·th, 4·tw, C')``.

    ``out`` may be a channel slice of a wider tensor.
    """
    channels = tiles.shape[-1]
    grid = tiles.view(TILE, TILE, batch, th, tw, channels).permute(2, 3, 0, 4, 1, 5)
    out.view(batch, th, TILE, tw, TILE, channels).copy_(grid)


def conv3x3(padded: torch.Tensor, weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reference helper: ``(B, H, W, C_out)`` output of a 3×3 conv by F(4,3).

    ``padded`` from :func:`pad_reflect_for_tiles`, ``weight`` from :func:`transform_weight`.
    """
    batch = padded.shape[0]
    th, tw = tile_grid(height, width)
    products = torch.bmm(input_tiles(padded, input_matrix()), weight)
    out = padded.new_empty((batch, TILE * th, TILE * tw, weight.shape[-1]))
    scatter_tiles(output_tiles(products, output_matrix()), out, batch, th, tw)
    return out[:, :height, :width]


__all__ = [
    "conv3x3",
    "input_matrix",
    "input_tiles",
    "output_matrix",
    "output_tiles",
    "pad_reflect_for_tiles",
    "scatter_tiles",
    "tile_grid",
    "transform_weight",
]
