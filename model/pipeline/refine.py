"""High-resolution refinement: sharper fills on large holes in big photos.

The official LaMa ``refine=True`` path (``saicinpainting/evaluation/refinement.py``, from
"Feature Refinement to Improve High Resolution Image Inpainting"), reimplemented:

1. the generator is split before its first FFC residual block: the *front* (stem and
   downsamplings) and the *rear* (residual blocks, decoder);
2. an image/mask pyramid is built (:func:`pyramid_sizes`): Gaussian 5×5 σ=1 blur + bilinear
   halving, holes dilated by the blur;
3. the coarsest level is filled by one plain forward; at each finer level the front's output
   features (and only they) are optimised with Adam so that the prediction (a) reproduces
   the known pixels and (b), once downsampled, agrees with the coarser level's fill inside
   the eroded hole (L1 both);
4. the last forward of the finest level, composited with the input, is the result.

Defaults are the official ``configs/prediction/default.yaml`` ``refiner:`` values. In
float32 the result matches the official code to float32 round-off (``tests/test_refine.py``).

The official code keeps one forward's graph at a time and breaks in half precision (its
peak, measured at 1.77 MP on an H200, is 15.4 GiB). Memory here is several times smaller:
the residual blocks are recomputed in the backward pass (activation checkpointing), CUDA
runs bf16 autocast (the Fourier transforms stay float32, see ``net.ffc.FourierUnit``), only
the features are differentiated (no weight gradients; the model is never modified), the
last forward runs without a graph, and each pyramid level is dropped once used. Above
``px_budget`` pixels the official code returns a downsized image; here the fill is upsized
back (bicubic) and only the hole is replaced.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lama_model.interface import ServedModel
from lama_model.net.ffc import FFCResnetBlock
from lama_model.net.generator import FFCResNetGenerator
from lama_model.pipeline.options import ProgressFn, RefineError, RefineOptions

EPS = 1e-8  # the official threshold for "any hole" / "fully hole"
EROSION_SIZE = 15  # the official loss mask is eroded with a 15×15 ellipse


@dataclass
class RefineResult:
    """``image``: ``(1, 3, H, W)`` float32, the refined fill composited into the input.

    ``losses``: per refined scale (coarse to fine, the coarsest has none), the L1 loss at
    every iteration. ``sizes``: the ``(h, w)`` of each pyramid level, coarse to fine.
    """

    image: torch.Tensor
    losses: list[list[float]] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)


# --- finding the generator ------------------------------------------------------------------


def refinable_generator(model: nn.Module) -> FFCResNetGenerator:
    """The eager generator behind ``model`` (a generator or a served model).

    Raises :class:`RefineError` for models that cannot run a backward pass through the
    generator's parts: TorchScript, ONNX Runtime, a fused model without its source.
    """
    if isinstance(model, FFCResNetGenerator):
        return model
    if not isinstance(model, ServedModel):  # e.g. a test's stand-in: nothing to refine with
        raise RefineError(
            f"refinement needs the eager PyTorch generator (it runs a backward pass); the "
            f"{type(model).__name__} model cannot"
        )
    if model.scripted:
        raise RefineError(
            "refinement needs the eager PyTorch generator (it runs a backward pass); "
            "a TorchScript model cannot: load the checkpoint folder or .ckpt instead"
        )
    generator = model.refine_generator
    if isinstance(generator, FFCResNetGenerator):
        return generator
    raise RefineError(
        f"refinement needs the eager PyTorch generator (it runs a backward pass); the "
        f"{model.description} model cannot: use the torch backend with a checkpoint (not ONNX "
        "or TorchScript)"
    )


def split_generator(
    generator: FFCResNetGenerator,
) -> tuple[nn.Module, list[nn.Module], nn.Module]:
    """``(front, blocks, tail)``: before the first FFC residual block, the blocks, the rest.

    The official rear is ``blocks`` followed by ``tail``.
    """
    layers = list(generator.model)
    first = next((i for i, m in enumerate(layers) if isinstance(m, FFCResnetBlock)), None)
    if first is None:
        raise RefineError("refinement needs a generator with FFC residual blocks")
    end = first
    while end < len(layers) and isinstance(layers[end], FFCResnetBlock):
        end += 1
    return nn.Sequential(*layers[:first]), layers[first:end], nn.Sequential(*layers[end:])


# --- pyramid operations (kornia-free) -------------------------------------------------------


def gaussian_kernel(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, centred (size odd)."""
    x = torch.arange(size, dtype=torch.float32) - size // 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def blur(x: torch.Tensor) -> torch.Tensor:
    """5×5 σ=1 Gaussian blur of ``(B, C, H, W)`` with ``reflect`` borders, per channel."""
    taps = gaussian_kernel().to(device=x.device, dtype=x.dtype)
    channels = x.shape[1]
    weight = (taps[:, None] * taps[None, :]).expand(channels, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), weight, groups=channels)


def half_size(x: torch.Tensor) -> torch.Tensor:
    """Bilinear resize to ``(H // 2, W // 2)`` without antialiasing (as the official code)."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // 2, w // 2), mode="bilinear", align_corners=False)


def pyrdown(image: torch.Tensor) -> torch.Tensor:
    """One Gaussian pyramid step: blur, then halve."""
    return half_size(blur(image))


def pyrdown_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pyramid step of a ``(B, 1, H, W)`` mask: blur, halve, then any trace of hole → 1."""
    return (half_size(blur(mask)) >= EPS).to(mask.dtype)


def ellipse_footprint(size: int = EROSION_SIZE) -> torch.Tensor:
    """The elliptic structuring element OpenCV's ``getStructuringElement`` draws (odd size)."""
    r = size // 2
    rows = torch.zeros(size, size)
    for i in range(size):
        dy = i - r
        # OpenCV's rule: half-width round(r·sqrt(1 - dy²/r²)) in each row.
        dx = int(math.floor(r * math.sqrt(max(0.0, (r * r - dy * dy) / (r * r))) + 0.5))
        rows[i, max(r - dx, 0) : min(r + dx + 1, size)] = 1
    return rows


def erode(mask: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
    """Binary erosion of a 0/1 ``(B, 1, H, W)`` mask; pixels outside the image count as 1."""
    k = footprint.to(device=mask.device, dtype=torch.float32)
    pad = (k.shape[-1] // 2, k.shape[-1] // 2, k.shape[-2] // 2, k.shape[-2] // 2)
    outside = F.pad(1.0 - mask.float(), pad)  # zero padding: outside is never a hole-edge
    touched = F.conv2d(outside, k[None, None].flip(-2, -1))
    return (touched < 0.5).to(mask.dtype)


def loss_mask(mask: torch.Tensor) -> torch.Tensor:
    """Where the coarse reference constrains the fine prediction: ``(B, 1, H//2, W//2)``.

    The mask halved without blur, kept only where all four fine pixels are holes, then
    eroded with the 15×15 ellipse (the reference is unreliable near the hole's edge).
    """
    halved = (half_size(mask) >= 1.0 - EPS).to(mask.dtype)
    return erode(halved, ellipse_footprint())


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad (edge not repeated) at the bottom/right to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="reflect")


def pyramid_sizes(height: int, width: int, options: RefineOptions) -> list[tuple[int, int]]:
    """The ``(h, w)`` of each pyramid level, coarse to fine, after the pixel budget.

    Levels: ``min(1 + round(max(0, log2(min_side_of_image / min_side))), max_scales)``;
    each coarser level is half the size (floor).
    """
    h, w = _budget_size(height, width, options.px_budget)
    ratio = min(h, w) / options.min_side
    n = min(1 + int(round(max(0.0, math.log2(ratio)))), options.max_scales)
    sizes = [(h, w)]
    for _ in range(n - 1):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes[::-1]


def _budget_size(height: int, width: int, budget: int) -> tuple[int, int]:
    if height * width <= budget:
        return height, width
    ratio = math.sqrt(budget / float(height * width))
    return int(height * ratio), int(width * ratio)


# --- the refinement -------------------------------------------------------------------------


def refine(
    model: nn.Module,
    image: torch.Tensor,
    mask: torch.Tensor,
    options: RefineOptions = RefineOptions(),  # noqa: B008 - frozen dataclass
    progress: ProgressFn | None = None,
) -> RefineResult:
    """Refined inpainting of ``image`` ``(1, 3, H, W)`` in [0, 1] under ``mask`` ``(1, 1, H, W)``.

    Every mask value > 0 is a hole (soft masks are accepted, as in the official code).
    ``model``: a generator or anything :func:`refinable_generator` accepts; its weights are
    untouched. Tensors are moved to the generator's device. ``progress(fraction, "refine")``
    is called after every forward (monotone); an exception raised from it stops the work
    between iterations (cancellation). Raises :class:`RefineError` for a model that cannot.
    """
    generator = refinable_generator(model)
    _check_inputs(generator, image, mask)
    report = progress or (lambda _f, _s: None)
    if not bool((mask > 0).any()):  # nothing to fill: the input, untouched
        report(1.0, "refine")
        return RefineResult(image=image.detach().float().clone())
    device = next(generator.parameters()).device
    dtype = _autocast_dtype(options.precision, device)
    full_h, full_w = image.shape[-2:]
    sizes = pyramid_sizes(full_h, full_w, options)
    if min(sizes[0]) < 2 * options.modulo:
        raise RefineError(f"image of {full_w}×{full_h} is too small to refine")
    with torch.inference_mode(False):  # inputs made under inference_mode cannot join autograd
        image = _plain_tensor(image.detach().to(device=device, dtype=torch.float32))
        mask = _plain_tensor(mask.detach().to(device=device, dtype=torch.float32))
    total = 1 + (len(sizes) - 1) * options.n_iters
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        report(done / total, "refine")

    parts = _Parts(*split_generator(generator), options, dtype, step)
    result = RefineResult(image=image, sizes=sizes)
    reference = _refine_pyramid(image, mask, sizes, parts, result.losses)
    if reference.shape[-2:] != (full_h, full_w):
        reference = _upsize_into(image, mask, reference)
    result.image = reference
    return result


def _check_inputs(generator: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> None:
    if generator.training:
        raise RefineError("refinement needs the generator in eval mode (BatchNorm statistics)")
    if image.dim() != 4 or image.shape[:2] != (1, 3) or mask.shape != (1, 1, *image.shape[2:]):
        raise RefineError(
            f"refine takes image (1, 3, H, W) and mask (1, 1, H, W), not {tuple(image.shape)} "
            f"and {tuple(mask.shape)}"
        )


@dataclass
class _Parts:
    """The generator split where the refinement optimises, and how to run its rear."""

    front: nn.Module
    blocks: list[nn.Module]
    tail: nn.Module
    options: RefineOptions
    dtype: torch.dtype | None  # autocast, or None for float32
    step: Callable[[], None]  # after every forward: progress and cancellation

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def rear(self, features: tuple, grad: bool) -> torch.Tensor:
        """The residual blocks and the decoder on ``features``, float32 out."""
        device_type = next(f for f in features if torch.is_tensor(f)).device.type
        with torch.set_grad_enabled(grad), self.autocast(device_type):
            x = features
            for block in self.blocks:
                if grad and self.options.checkpoint:  # recomputed in backward: one block's graph
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            return self.tail(x).float()


def _refine_pyramid(
    image: torch.Tensor,
    mask: torch.Tensor,
    sizes: list[tuple[int, int]],
    parts: _Parts,
    losses: list[list[float]],
) -> torch.Tensor:
    """The finest level's fill, each level refined against the coarser one's; the losses of
    every refined level are appended to ``losses``."""
    modulo = parts.options.modulo
    with torch.inference_mode(False), torch.enable_grad():
        levels = _pyramid(image, mask, sizes)
        reference: torch.Tensor | None = None
        while levels:
            level_image, level_mask = levels.pop()  # coarsest first; each dropped after use
            h, w = level_image.shape[-2:]
            padded_image = pad_to_multiple(level_image, modulo)
            padded_mask = (pad_to_multiple(level_mask, modulo) >= EPS).float()
            del level_image, level_mask
            filled, level_losses = _refine_level(
                padded_image, padded_mask, reference, (h, w), parts
            )
            if reference is not None:
                losses.append(level_losses)
            reference = filled[:, :, :h, :w]
    assert reference is not None
    return reference


def _pyramid(
    image: torch.Tensor, mask: torch.Tensor, sizes: list[tuple[int, int]]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Levels fine to coarse (pop() gives the coarsest); the finest within the pixel budget."""
    size = sizes[-1]
    with torch.no_grad():
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False) > EPS
            mask = mask.float()
        levels = [(image, mask)]
        for _ in range(len(sizes) - 1):
            coarser_image, coarser_mask = levels[-1]
            levels.append((pyrdown(coarser_image), pyrdown_mask(coarser_mask)))
    return levels


def _refine_level(
    image: torch.Tensor,
    mask: torch.Tensor,
    reference: torch.Tensor | None,
    size: tuple[int, int],
    parts: _Parts,
) -> tuple[torch.Tensor, list[float]]:
    """One pyramid level (padded image and 0/1 mask): the filled image and the losses."""
    inputs = torch.cat([image * (1 - mask), mask], dim=1)
    if parts.options.channels_last:  # convolutions keep the layout of their input
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), parts.autocast(image.device.type):
        features = parts.front(inputs)
    del inputs
    # The optimised variables: float32 leaves even under autocast (Adam's state stays exact).
    features = tuple(
        f.detach().float().requires_grad_(reference is not None) if torch.is_tensor(f) else f
        for f in features
    )
    if reference is None:  # the coarsest level: one plain forward, nothing to agree with
        with torch.no_grad():
            pred = parts.rear(features, grad=False)
        parts.step()
        return _composite(pred, image, mask), []
    return _optimise_features(features, image, mask, reference.detach(), size, parts)


def _optimise_features(
    features: tuple,
    image: torch.Tensor,
    mask: torch.Tensor,
    reference: torch.Tensor,
    size: tuple[int, int],
    parts: _Parts,
) -> tuple[torch.Tensor, list[float]]:
    """Adam on the front's features against :func:`_l1_loss`; the last forward's fill."""
    h, w = size
    params = [f for f in features if torch.is_tensor(f)]
    optimizer = torch.optim.Adam(params, lr=parts.options.lr)
    known = (mask < EPS).float()
    n_known = 3 * int(known.sum().item())
    target = loss_mask(mask[:, :, :h, :w])
    n_target = 3 * int(target.sum().item())
    losses: list[float] = []
    n_iters = parts.options.n_iters
    for i in range(n_iters):
        last = i == n_iters - 1
        pred = parts.rear(features, grad=not last)
        with torch.set_grad_enabled(not last):
            loss = _l1_loss(pred, image, known, n_known, reference, target, n_target, size)
        losses.append(float(loss.detach()))
        if not last and loss.requires_grad:  # (no term at all: nothing to optimise)
            # Gradients for the features only: the weights get none (the engine skips their
            # gradient kernels) and the shared model is never modified, even across threads.
            for param, grad in zip(params, torch.autograd.grad(loss, params), strict=True):
                param.grad = grad
            optimizer.step()
            del loss, pred
        parts.step()
    return _composite(pred.detach(), image, mask), losses


def _l1_loss(
    pred: torch.Tensor,
    image: torch.Tensor,
    known: torch.Tensor,
    n_known: int,
    reference: torch.Tensor,
    target: torch.Tensor,
    n_target: int,
    size: tuple[int, int],
) -> torch.Tensor:
    """Mean L1 on the known pixels (padding included) + mean L1 of the downsampled
    prediction against the coarser fill on the eroded hole; channels count separately.

    An empty selection contributes nothing (the official mean over nothing is NaN in the
    logged loss but adds no gradient).
    """
    loss = pred.new_zeros(())
    if n_known:
        loss = loss + ((pred - image).abs() * known).sum() / n_known
    if n_target:
        h, w = size
        down = pyrdown(pred[:, :, :h, :w])
        loss = loss + ((down - reference).abs() * target).sum() / n_target
    return loss


def _composite(pred: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return mask * pred + (1 - mask) * image


def _upsize_into(image: torch.Tensor, mask: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """A fill refined under the pixel budget, upsized and pasted into the full-size hole."""
    big = F.interpolate(small, size=image.shape[-2:], mode="bicubic", align_corners=False)
    hole = (mask > 0).float()
    return hole * big.clamp(0, 1) + (1 - hole) * image


def _plain_tensor(t: torch.Tensor) -> torch.Tensor:
    return t.clone() if t.is_inference() else t


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if precision == "fp16" and device.type == "cpu":
        raise RefineError("refine precision fp16 needs a GPU; on CPU use fp32 or bf16")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def refine_window(
    model: nn.Module,
    rgb: np.ndarray,
    hole: np.ndarray,
    options: RefineOptions = RefineOptions(),  # noqa: B008 - frozen dataclass
    progress: ProgressFn | None = None,
) -> np.ndarray | None:
    """Refined fill of one window of the inpainting pipeline, ``H×W×3`` float32.

    ``rgb``: ``H×W×3`` float32 in [0, 1]; ``hole``: ``H×W`` bool. Returns None for a window
    too small to refine (under twice ``modulo`` on a side; the plain forward does those).
    """
    h, w = hole.shape
    if min(h, w) < 2 * options.modulo:
        return None
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    mask = torch.from_numpy(hole.astype(np.float32))[None, None]
    result = refine(model, image, mask, options, progress)
    return result.image[0].permute(1, 2, 0).float().cpu().numpy()


__all__ = [
    "RefineResult",
    "blur",
    "ellipse_footprint",
    "erode",
    "loss_mask",
    "pyramid_sizes",
    "pyrdown",
    "pyrdown_mask",
    "refinable_generator",
    "refine",
    "refine_window",
]
