"""From a soft selection mask to the generator's hole and the composite's blend weights.

The generator fills a hole grown by ``mask_grow + feather`` pixels (objects leave a halo that
the user's selection rarely covers). The composite weight is 1 up to ``mask_grow`` pixels from
the selection and falls off linearly over the next ``feather`` pixels, so the fill fades into
the untouched photo instead of ending on a hard seam. Beyond that the weight is exactly 0 and
pixels are copied bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

HOLE_THRESHOLD = 127  # mask values above this are holes; 1..127 are soft selection edges


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


def ring_distance(core: np.ndarray, radius: int) -> np.ndarray:
    """Approximate distance (in pixels, up to ``radius``) from the ``core`` region.

    0 on the core, k on the k-th ring reached by alternating 3×3 square and cross dilations
    (an octagon, close to a disc), ``radius + 1`` beyond. Done in torch so it is fast.
    """
    dist = np.full(core.shape, radius + 1, dtype=np.int32)
    dist[core] = 0
    if radius <= 0 or not core.any():
        return dist
    cur = torch.from_numpy(core.astype(np.float32))[None, None]
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    reached = core.copy()
    for step in range(1, radius + 1):
        if step % 2:
            grown = F.max_pool2d(cur, 3, stride=1, padding=1)
        else:
            grown = (F.conv2d(cur, cross, padding=1) > 0).float()
        new = grown[0, 0].numpy() > 0
        ring = new & ~reached
        dist[ring] = step
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
