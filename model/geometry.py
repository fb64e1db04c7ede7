"""From a soft selection mask to the generator's hole and the composite's blend weights.

The generator fills a hole grown by ``mask_grow + feather`` pixels (objects leave a halo that
the user's selection rarely covers). The composite weight is 1 up to ``mask_grow`` pixels from
the selection and falls off linearly over the next ``feather`` pixels, so the fill fades into
the untouched photo instead of ending on a hard seam. Beyond that the weight is exactly 0 and
pixels are copied bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where the tensor rules run: --help and the plan stay light
    import torch

HOLE_THRESHOLD = 127  # mask values above this are holes; 1..127 are soft selection edges
PIXEL_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}  # float32: 1.0


def pixel_scale(dtype: np.dtype) -> float:
    """The value of a full-intensity pixel in ``dtype``: 255, 65535, or 1.0 for float32."""
    return PIXEL_SCALES.get(np.dtype(dtype), 1.0)


def colour_channels(channels: int) -> int:
    """How many of an image's ``channels`` are colour: 3 for RGB(A), 1 for grey(+alpha).

    The rest (alpha) is never touched by the fill.
    """
    return 3 if channels >= 3 else 1


def pad_amount(size: int, multiple: int) -> int:
    """Pixels to add to a side of ``size`` so the generator can take it.

    Up to a multiple of ``multiple``, and to at least twice it: reflect padding inside the
    network needs at least 2×2 at the bottleneck, so tiny windows are mirrored up to twice
    the size multiple (the official code crashes there).
    """
    return max((-size) % multiple, 2 * multiple - size)


def bucket_size(size: int, bucket: int) -> int:
    """``size`` rounded up to a multiple of ``bucket``."""
    return -(-size // bucket) * bucket


def pad_symmetric(t: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` at the bottom/right with NumPy's ``symmetric`` mode.

    The edge pixel is repeated, as in the inpainting pipeline's own padding; pads longer
    than the image mirror again, so any size works.
    """
    import torch

    while bottom > 0:
        step = min(bottom, t.shape[-2])
        t = torch.cat([t, t[..., -step:, :].flip(-2)], dim=-2)
        bottom -= step
    while right > 0:
        step = min(right, t.shape[-1])
        t = torch.cat([t, t[..., -step:].flip(-1)], dim=-1)
        right -= step
    return t


@dataclass(frozen=True)
class Box:
    """Half-open pixel rectangle ``[y0, y1) × [x0, x1)``."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def grow(self, margin_y: int, margin_x: int, height: int, width: int) -> Box:
        """Grow by margins, clamped to a ``height × width`` image."""
        return Box(
            max(0, self.y0 - margin_y),
            max(0, self.x0 - margin_x),
            min(height, self.y1 + margin_y),
            min(width, self.x1 + margin_x),
        )

    def union(self, other: Box) -> Box:
        return Box(
            min(self.y0, other.y0),
            min(self.x0, other.x0),
            max(self.y1, other.y1),
            max(self.x1, other.x1),
        )

    def intersection(self, other: Box) -> Box:
        """The common part (zero or negative height/width when they do not meet)."""
        return Box(
            max(self.y0, other.y0),
            max(self.x0, other.x0),
            min(self.y1, other.y1),
            min(self.x1, other.x1),
        )

    def slices_in(self, outer: Box) -> tuple[slice, slice]:
        """This box's slices inside ``outer``'s array."""
        return (
            slice(self.y0 - outer.y0, self.y1 - outer.y0),
            slice(self.x0 - outer.x0, self.x1 - outer.x0),
        )

    def overlaps(self, other: Box) -> bool:
        return (
            self.y0 < other.y1 and other.y0 < self.y1 and self.x0 < other.x1 and other.x0 < self.x1
        )


def bounding_box(mask: np.ndarray) -> Box | None:
    """Bounding box of the non-zero pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    # Columns only over the rows in use: a small object in a large photo reads a strip.
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return Box(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


CROSS = ((0.0, 1.0, 0.0), (1.0, 1.0, 1.0), (0.0, 1.0, 0.0))  # alternates with 3×3 squares


def ring_distance(core: np.ndarray, radius: int) -> np.ndarray:
    """Approximate distance (in pixels, up to ``radius``) from the ``core`` region.

    0 on the core, k on the k-th ring reached by alternating 3×3 square and cross dilations
    (an octagon, close to a disc), ``radius + 1`` beyond. Done in torch so it is fast.
    """
    import torch

    return ring_distance_tensor(torch.from_numpy(np.ascontiguousarray(core)), radius).numpy()


def ring_distance_tensor(core: torch.Tensor, radius: int) -> torch.Tensor:
    """:func:`ring_distance` on a ``(h, w)`` bool tensor on any device (int32)."""
    import torch
    import torch.nn.functional as F

    dist = torch.full(core.shape, radius + 1, dtype=torch.int32, device=core.device)
    dist[core] = 0
    if radius <= 0:
        return dist
    cur = core.float()[None, None]
    cross = torch.tensor(CROSS, device=core.device)[None, None]
    reached = core
    for step in range(1, radius + 1):
        if step % 2:
            grown = F.max_pool2d(cur, 3, stride=1, padding=1)
        else:
            grown = (F.conv2d(cur, cross, padding=1) > 0).float()
        new = grown[0, 0] > 0
        dist = torch.where(new & ~reached, step, dist)
        reached = new
        cur = grown
    return dist


def blend_weights(mask: np.ndarray, mask_grow: int, feather: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(hole, alpha)`` for a uint8 soft mask.

    ``hole`` (bool) is what the generator fills; ``alpha`` (float32, 0..1) the composite
    weight. ``alpha == 0`` exactly outside ``hole``.
    """
    core = mask > HOLE_THRESHOLD
    radius = mask_grow + feather
    dist = ring_distance(core, radius)
    alpha = np.zeros(mask.shape, dtype=np.float32)
    alpha[dist <= mask_grow] = 1.0
    if feather > 0:
        ramp = (dist > mask_grow) & (dist <= radius)
        alpha[ramp] = 1.0 - (dist[ramp] - mask_grow) / np.float32(feather + 1)
    soft = mask.astype(np.float32) / 255.0
    alpha = np.maximum(alpha, np.where(mask > 0, soft, 0.0)).astype(np.float32)
    hole = (dist <= radius) | (mask > 0)
    return hole, alpha


def blend_weights_tensor(
    mask: torch.Tensor, mask_grow: int, feather: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`blend_weights` on a ``(h, w)`` uint8 tensor: ``(hole, alpha)``, same values.

    The ramp is computed in float64 and rounded to float32, as NumPy does.
    """
    import torch

    core = mask > HOLE_THRESHOLD
    radius = mask_grow + feather
    dist = ring_distance_tensor(core, radius)
    alpha = (dist <= mask_grow).float()
    if feather > 0:
        ramp = (dist > mask_grow) & (dist <= radius)
        values = (1.0 - exact_divide(dist.double() - mask_grow, feather + 1)).float()
        alpha = torch.where(ramp, values, alpha)
    soft = exact_divide(mask.float(), 255.0)
    alpha = torch.maximum(alpha, torch.where(mask > 0, soft, 0.0))
    hole = (dist <= radius) | (mask > 0)
    return hole, alpha


def exact_divide(t: torch.Tensor, divisor: float) -> torch.Tensor:
    """``t / divisor`` correctly rounded, as NumPy divides.

    CUDA kernels turn division by a Python scalar into multiplication by its reciprocal,
    one ulp off now and then (60/255 came out 0.23529413 instead of 0.23529412 on an H200);
    a divisor tensor on the device keeps the IEEE division (made by a fill kernel, so no
    host-to-device copy and no synchronisation).
    """
    import torch

    return t / torch.full((), divisor, dtype=t.dtype, device=t.device)


def region_boxes(hole: np.ndarray, cell: int = 32) -> list[Box]:
    """Bounding boxes of the hole's connected parts, found on a coarse grid of ``cell`` px.

    Coarse connectivity merges parts closer than a cell, which is what we want: they share
    context anyway.
    """
    h, w = hole.shape
    gh, gw = -(-h // cell), -(-w // cell)
    padded = np.zeros((gh * cell, gw * cell), dtype=bool)
    padded[:h, :w] = hole
    grid = padded.reshape(gh, cell, gw, cell).any(axis=(1, 3))
    labels = np.zeros(grid.shape, dtype=np.int32)
    boxes: list[Box] = []
    for gy, gx in zip(*np.nonzero(grid), strict=True):
        if labels[gy, gx]:
            continue
        label = len(boxes) + 1
        stack = [(int(gy), int(gx))]
        labels[gy, gx] = label
        y0, x0, y1, x1 = gy, gx, gy, gx
        while stack:
            cy, cx = stack.pop()
            y0, x0, y1, x1 = min(y0, cy), min(x0, cx), max(y1, cy), max(x1, cx)
            for ny in range(max(cy - 1, 0), min(cy + 2, gh)):
                for nx in range(max(cx - 1, 0), min(cx + 2, gw)):
                    if grid[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = label
                        stack.append((ny, nx))
        cells = Box(
            int(y0) * cell,
            int(x0) * cell,
            min(h, (int(y1) + 1) * cell),
            min(w, (int(x1) + 1) * cell),
        )
        tight = bounding_box(hole[cells.slices])
        assert tight is not None
        boxes.append(
            Box(cells.y0 + tight.y0, cells.x0 + tight.x0, cells.y0 + tight.y1, cells.x0 + tight.x1)
        )
    return boxes


def merge_overlapping(boxes: list[Box]) -> list[Box]:
    """Union boxes until none overlap (crops that overlap are run as one)."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        out: list[Box] = []
        for box in merged:
            for i, other in enumerate(out):
                if box.overlaps(other):
                    out[i] = other.union(box)
                    changed = True
                    break
            else:
                out.append(box)
        merged = out
    return merged
