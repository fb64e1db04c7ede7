"""The Fourier unit's ``rfft2``/``irfft2`` written as real matrix products, for one input size.

An ONNX graph made from :class:`MatmulFourierUnit` holds only ``MatMul``, ``Concat``, ``Slice``,
``Reshape`` and the unit's own convolution, batch norm and ReLU: no ``DFT`` operator. Runtimes
that lack one (OpenVINO's ONNX reader today, and by the same token DirectML, CoreML, WebGPU) can
run it. The price is a fixed spatial size: the DFT matrices are constants for the ``H×W`` the unit
sees, so a graph built from them takes exactly one image size (a *size bucket*).

The algebra, with LaMa's ``norm="ortho"`` (each axis scaled by ``1/√n``) and ``W' = W//2 + 1``::

    rfft along W:   Y = x · [C_w | S_w]               C_w[w,k] = cos(2πkw/W)/√W, S_w = −sin(…)/√W
    DFT along H:    [Z_re; Z_im] = [[C_h, −S_h], [S_h, C_h]] · [Y_re; Y_im]       (2H × 2H)
    inverse along H: the transpose of that block matrix (the transform is unitary, C, S symmetric)
    irfft along W:  x = U_re · diag(a) C_wᵀ + U_im · diag(a) S_wᵀ      a = 1 at k = 0 and k = W/2

``[Z_re; Z_im]`` stacked along H per channel is, after a free reshape of ``(B, C, 2H, W')`` to
``(B, 2C, H, W')``, exactly the ``[c0.re, c0.im, c1.re, …]`` channel order of
:class:`~lama_model.net.ffc.FourierUnit` (torch's ``stack(dim=2)`` then ``reshape``), which the
released 1×1 weights expect. The imaginary parts at ``k = 0`` and ``k = W/2`` drop out of the
inverse (their sine is zero), as in torch's ``irfft``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from lama_model.net.ffc import FourierUnit


class DftMatrices(nn.Module):
    """The four constant matrices for one ``height × width`` (float64 maths, float32 stored).

    One instance is shared by every Fourier unit that sees this size, so an exported graph
    holds each matrix once.
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width
        half = width // 2 + 1
        cos_w, sin_w = _ortho_cos_sin(width, half)  # (W, W')
        cos_h, sin_h = _ortho_cos_sin(height, height)  # (H, H), symmetric
        rows = torch.cat([torch.cat([cos_h, -sin_h], 1), torch.cat([sin_h, cos_h], 1)], 0)
        # irfft counts every bin but DC and (even W) Nyquist twice: they stand for ±k.
        twice = torch.full((half, 1), 2.0, dtype=torch.float64)
        twice[0] = 1.0
        if width % 2 == 0:
            twice[-1] = 1.0
        self.register_buffer("rfft_w", torch.cat([cos_w, sin_w], 1).float())  # (W, 2W')
        self.register_buffer("dft_h", rows.float())  # (2H, 2H)
        self.register_buffer("idft_h", rows.T.contiguous().float())  # (2H, 2H)
        self.register_buffer("irfft_w_re", (twice * cos_w.T).float())  # (W', W)
        self.register_buffer("irfft_w_im", (twice * sin_w.T).float())  # (W', W)

    def rfft2(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, C, 2H, W')``: real parts in rows ``:H``, imaginary below."""
        half = self.width // 2 + 1
        y = torch.matmul(x, self.rfft_w)
        stacked = torch.cat([y[..., :half], y[..., half:]], dim=-2)
        return torch.matmul(self.dft_h, stacked)

    def irfft2(self, spectrum: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`rfft2`: ``(B, C, 2H, W')`` → ``(B, C, H, W)``."""
        u = torch.matmul(self.idft_h, spectrum)
        real, imag = u[..., : self.height, :], u[..., self.height :, :]
        return torch.matmul(real, self.irfft_w_re) + torch.matmul(imag, self.irfft_w_im)


def _ortho_cos_sin(n: int, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos(2πkt/n)/√n`` and ``−sin(2πkt/n)/√n`` for t < n, k < bins: the real and imaginary
    parts of the ortho DFT's ``exp(−2πikt/n)/√n``, in float64."""
    t = torch.arange(n, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(t, torch.arange(bins, dtype=torch.float64)) / n
    return torch.cos(angle) / math.sqrt(n), -torch.sin(angle) / math.sqrt(n)


class MatmulFourierUnit(nn.Module):
    """:class:`~lama_model.net.ffc.FourierUnit` for one input size, its DFTs as matrix products.

    Shares the original unit's convolution and batch norm; float32 only (an export path).
    """

    def __init__(self, unit: FourierUnit, matrices: DftMatrices) -> None:
        super().__init__()
        self.conv_layer, self.bn, self.relu = unit.conv_layer, unit.bn, unit.relu
        self.matrices = matrices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        if (height, width) != (self.matrices.height, self.matrices.width):
            raise ValueError(
                f"this Fourier unit was built for {self.matrices.height}×{self.matrices.width}, "
                f"got {height}×{width}"
            )
        spectrum = self.matrices.rfft2(x)  # (B, C, 2H, W'): [re; im] per channel
        # (B, C, 2H, W') → (B, 2C, H, W'): the [c0.re, c0.im, c1.re, …] order of FourierUnit.
        stacked = spectrum.reshape(batch, 2 * channels, height, spectrum.shape[-1])
        stacked = self.relu(self.bn(self.conv_layer(stacked)))
        spectrum = stacked.reshape(batch, -1, 2 * height, stacked.shape[-1])
        return self.matrices.irfft2(spectrum)


def fourier_unit_sizes(module: nn.Module, *inputs: torch.Tensor) -> dict[FourierUnit, tuple]:
    """The ``(H, W)`` each Fourier unit of ``module`` sees when it runs on ``inputs``."""
    sizes: dict[FourierUnit, tuple] = {}

    def record(unit: nn.Module, args: tuple) -> None:
        sizes[unit] = tuple(args[0].shape[-2:])

    units = [m for m in module.modules() if isinstance(m, FourierUnit)]
    hooks = [unit.register_forward_pre_hook(record) for unit in units]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def with_matmul_dft(module: nn.Module, *inputs: torch.Tensor) -> nn.Module:
    """A copy of ``module`` (float32, eval) whose Fourier units compute their DFTs as matrix
    products for the sizes they see on ``inputs``; ``module`` itself is left as it was.

    The copy takes inputs of exactly the shapes of ``inputs`` (other sizes raise ``ValueError``).
    """
    module = copy.deepcopy(module).float().eval()
    sizes = fourier_unit_sizes(module, *inputs)
    shared: dict[tuple, DftMatrices] = {}
    device = inputs[0].device
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FourierUnit) and child in sizes:
                size = sizes[child]
                if size not in shared:
                    shared[size] = DftMatrices(*size).to(device)
                setattr(parent, name, MatmulFourierUnit(child, shared[size]))
    return module
