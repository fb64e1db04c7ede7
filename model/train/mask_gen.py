"""Random hole masks for training and evaluation: the official LaMa mask samplers, re-stated.

``make_mask_generator("large")`` is the Big LaMa training mix (config ``abl-04-256-mh-dist``):
with equal probability either 1–6 polygonal brush strokes (each 1–5 straight segments, 5–104 px
wide) or 1–4 axis-aligned boxes (30–150 px, 10 px from the border). ``thin``, ``medium`` and
``thick`` are the irregular settings of the official evaluation mask sets
(``configs/data_gen/random_*_256.yaml``), including their "at most half the image" filter.
Their pixel settings are for 256² images; for another size every length is scaled by
``min(height, width) / 256`` (:class:`SizeScaled`), so a 128² training crop gets holes of the
same share as a 256² one. (The official 512² evaluation sets have hand-made settings of their
own, close to this doubling; ours are the doubled 256² ones.)

Every random number comes from the ``np.random.RandomState`` passed in, drawn in the same order
as the official code draws from NumPy's global generator, so a sampler seeded like the official
one makes the same masks, bit for bit. The official code rasterises strokes with ``cv2.line``
(thick ``LINE_8``); :func:`draw_thick_line` re-states OpenCV's integer rasterisation, so no
OpenCV is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Protocol

import numpy as np

# The official code writes 2·π as this literal; kept so that angles match to the last bit.
_TWO_PI_OFFICIAL = 2 * 3.1415926


class MaskGenerator(Protocol):
    """Draws one mask: float32 ``height × width``, 1 = hole, 0 = known."""

    def __call__(self, rng: np.random.RandomState, height: int, width: int) -> np.ndarray: ...


class ScalableMasks(MaskGenerator, Protocol):
    """A sampler whose lengths (stroke lengths and widths, box sizes, margins) are in pixels of
    a ``REFERENCE_SIZE`` image and can be scaled for another size."""

    def scaled(self, factor: float) -> ScalableMasks: ...


# The official samplers' pixel settings are for 256×256 crops (Big LaMa's training size).
REFERENCE_SIZE = 256


def _scale_length(value: int, factor: float, least: int) -> int:
    return max(least, int(round(value * factor)))


# --------------------------------------------------------------------------------------------
# Rasterisation: what cv2.line(mask, p0, p1, 1.0, thickness) does for thickness > 1 (LINE_8).
# OpenCV works in 16.16 fixed point: the stroke is a quadrilateral around the segment, filled
# row by row with its outline traced as 8-connected lines, plus a filled circle at each end.
# Every integer operation below is the one OpenCV does, so the pixels are the same.

_SHIFT = 16
_ONE = 1 << _SHIFT
_HALF = _ONE >> 1


def _trunc_div(a: int, b: int) -> int:
    """C integer division (rounds toward zero; Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _set(mask: np.ndarray, x: int, y: int) -> None:
    if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1]:
        mask[y, x] = 1


def _set_row(mask: np.ndarray, y: int, x0: int, x1: int) -> None:
    if 0 <= y < mask.shape[0]:
        x0, x1 = max(x0, 0), min(x1, mask.shape[1] - 1)
        if x0 <= x1:
            mask[y, x0 : x1 + 1] = 1


def _clip_to_image(
    height: int, width: int, x1: int, y1: int, x2: int, y2: int
) -> tuple[int, int, int, int] | None:
    """Clip a fixed-point segment to the image (Cohen–Sutherland, OpenCV's clipLine)."""
    right, bottom = (width << _SHIFT) - 1, (height << _SHIFT) - 1

    def outcode(x: int, y: int) -> int:
        return (x < 0) | (x > right) << 1 | (y < 0) << 2 | (y > bottom) << 3

    c1, c2 = outcode(x1, y1), outcode(x2, y2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += int((a - y1) * (x2 - x1) / (y2 - y1))
            y1 = a
            c1 = outcode(x1, 0) & 3
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int((a - y2) * (x2 - x1) / (y2 - y1))
            y2 = a
            c2 = outcode(x2, 0) & 3
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int((a - x1) * (y2 - y1) / (x2 - x1))
                x1, c1 = a, 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int((a - x2) * (y2 - y1) / (x2 - x1))
                x2, c2 = a, 0
    return (x1, y1, x2, y2) if (c1 | c2) == 0 else None


def _trace_edge(mask: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> None:
    """8-connected line between two fixed-point points (OpenCV's Line2)."""
    clipped = _clip_to_image(*mask.shape, x1, y1, x2, y2)
    if clipped is None:
        return
    x1, y1, x2, y2 = clipped
    dx, dy = x2 - x1, y2 - y1
    mostly_horizontal = abs(dx) > abs(dy)
    # Walk along the major axis in increasing order, one pixel per step.
    if (dx < 0) if mostly_horizontal else (dy < 0):
        x1, y1, x2, y2 = x2, y2, x1, y1
        dx, dy = -dx, -dy
    _set(mask, (x2 + _HALF) >> _SHIFT, (y2 + _HALF) >> _SHIFT)
    x1 += _HALF
    y1 += _HALF
    if mostly_horizontal:
        step = _trunc_div(dy << _SHIFT, abs(dx) | 1)
        x = x1 >> _SHIFT
        for k in range(((x2 - x1 + _HALF) >> _SHIFT) + 1):
            _set(mask, x + k, (y1 + k * step) >> _SHIFT)
    else:
        step = _trunc_div(dx << _SHIFT, abs(dy) | 1)
        y = y1 >> _SHIFT
        for k in range(((y2 - y1 + _HALF) >> _SHIFT) + 1):
            _set(mask, (x1 + k * step) >> _SHIFT, y + k)


def _fill_convex_polygon(mask: np.ndarray, vertices: list[tuple[int, int]]) -> None:
    """Fill a convex polygon given in fixed point (OpenCV's FillConvexPoly, LINE_8)."""
    height, width = mask.shape
    n = len(vertices)
    previous = vertices[-1]
    for vertex in vertices:
        _trace_edge(mask, *previous, *vertex)
        previous = vertex
    ys = [v[1] for v in vertices]
    xs = [v[0] for v in vertices]
    top = ys.index(min(ys))
    y_min, y_max = (min(ys) + _HALF) >> _SHIFT, (max(ys) + _HALF) >> _SHIFT
    x_min, x_max = (min(xs) + _HALF) >> _SHIFT, (max(xs) + _HALF) >> _SHIFT
    if x_max < 0 or y_min >= height or x_min >= width:
        return
    y_max = min(y_max, height - 1)
    # Two chains walk down from the top vertex, one forwards and one backwards through the
    # vertex list; each keeps its current x, x step per row, and the row where its edge ends.
    chains = [[top, 1, -_ONE, 0, y_min], [top, n - 1, -_ONE, 0, y_min]]  # idx, dir, x, dx, end
    edges_left = n
    y = y_min
    while True:
        for chain in chains:
            if y < chain[4]:
                continue
            start, direction = chain[0], chain[1]
            nxt = (start + direction) % n
            while edges_left > 0:
                edges_left -= 1
                end_row = (vertices[nxt][1] + _HALF) >> _SHIFT
                if end_row > y:
                    x_start, x_end = vertices[start][0], vertices[nxt][0]
                    rows = end_row - y
                    step = _trunc_div((x_end - x_start) * 2 + rows, 2 * rows)
                    chain[:] = [nxt, direction, x_start, step, end_row]
                    break
                start, nxt = nxt, (nxt + direction) % n
            else:
                edges_left -= 1  # every edge used up: the scan is over
        if edges_left < 0:
            break
        if y >= 0:
            left, right = sorted((chains[0][2], chains[1][2]))
            _set_row(mask, y, (left + _HALF) >> _SHIFT, (right + _HALF) >> _SHIFT)
        chains[0][2] += chains[0][3]
        chains[1][2] += chains[1][3]
        y += 1
        if y > y_max:
            break


@lru_cache(maxsize=256)
def _disc_half_widths(radius: int) -> tuple[int, ...]:
    """Half-width of each row offset 0…radius of OpenCV's filled (midpoint) circle."""
    half = [0] * (radius + 1)
    err, dx, dy, plus, minus = 0, radius, 0, 1, 2 * radius - 1
    while dx >= dy:
        half[dy] = max(half[dy], dx)
        half[dx] = max(half[dx], dy)
        dy += 1
        err += plus
        plus += 2
        if err > 0:  # step inwards: the octant's next row is one pixel narrower
            err -= minus
            dx -= 1
            minus -= 2
    return tuple(half)


def _fill_disc(mask: np.ndarray, cx: int, cy: int, radius: int) -> None:
    half = _disc_half_widths(radius)
    for offset in range(-radius, radius + 1):
        h = half[abs(offset)]
        _set_row(mask, cy + offset, cx - h, cx + h)


def draw_thick_line(
    mask: np.ndarray, start: tuple[int, int], end: tuple[int, int], thickness: int
) -> None:
    """Set to 1 the pixels of a ``thickness``-wide stroke from ``start`` to ``end`` (x, y).

    Pixel-for-pixel what ``cv2.line(mask, start, end, 1, thickness)`` draws (``LINE_8``,
    ``thickness`` ≥ 2): a quadrilateral of half-width ``ceil(thickness/2)`` around the segment
    and round caps of radius ``ceil(thickness/2)``. Points may lie outside the image.
    """
    if thickness < 2:
        raise ValueError(f"thickness must be at least 2, got {thickness}")
    x0, y0 = start[0] << _SHIFT, start[1] << _SHIFT
    x1, y1 = end[0] << _SHIFT, end[1] << _SHIFT
    dx, dy = (x0 - x1) / _ONE, (y1 - y0) / _ONE
    length2 = dx * dx + dy * dy
    half_fixed = thickness << (_SHIFT - 1)  # thickness / 2 in fixed point
    if length2 > np.finfo(np.float64).eps:
        scale = (half_fixed + (thickness & 1) * _ONE * 0.5) / math.sqrt(length2)
        # cvRound rounds half to even, as np.rint does.
        px, py = int(np.rint(dy * scale)), int(np.rint(dx * scale))
        corners = [(x0 + px, y0 + py), (x0 - px, y0 - py), (x1 - px, y1 - py), (x1 + px, y1 + py)]
        _fill_convex_polygon(mask, corners)
    radius = (half_fixed + _HALF) >> _SHIFT
    for x, y in ((x0, y0), (x1, y1)):
        _fill_disc(mask, (x + _HALF) >> _SHIFT, (y + _HALF) >> _SHIFT, radius)


# --------------------------------------------------------------------------------------------
# The samplers


@dataclass(frozen=True)
class IrregularStrokes:
    """Polygonal brush strokes (official ``RandomIrregularMaskGenerator``, draw method LINE).

    ``max_times`` is the config value; as in the official code (ramp coefficient 1) the number of
    strokes is drawn from ``min_times … max_times + 1`` inclusive.
    """

    max_angle: int = 4
    max_len: int = 60
    max_width: int = 20
    min_times: int = 0
    max_times: int = 10
    min_len: int = 10  # the official code's constants: length 10 + …, brush 5 + …
    min_width: int = 5

    def scaled(self, factor: float) -> IrregularStrokes:
        """The same strokes for an image ``factor`` times the reference size."""
        return replace(
            self,
            max_len=_scale_length(self.max_len, factor, 1),
            max_width=_scale_length(self.max_width, factor, 1),
            min_len=_scale_length(self.min_len, factor, 1),
            min_width=_scale_length(self.min_width, factor, 2),  # cv2.line's thick path
        )

    def __call__(self, rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
        mask = np.zeros((height, width), np.float32)
        top = int(self.min_times + 1 + (self.max_times - self.min_times))
        times = rng.randint(self.min_times, top + 1)
        for i in range(times):
            x, y = rng.randint(width), rng.randint(height)
            for _ in range(1 + rng.randint(5)):
                angle = 0.01 + rng.randint(self.max_angle)
                if i % 2 == 0:
                    angle = _TWO_PI_OFFICIAL - angle
                length = self.min_len + rng.randint(self.max_len)
                brush = self.min_width + rng.randint(self.max_width)
                # int32 truncates toward zero; the clip bound is the size itself, not size-1.
                end_x = int(np.clip(np.int32(x + length * np.sin(angle)), 0, width))
                end_y = int(np.clip(np.int32(y + length * np.cos(angle)), 0, height))
                draw_thick_line(mask, (int(x), int(y)), (end_x, end_y), brush)
                x, y = end_x, end_y
        return mask


@dataclass(frozen=True)
class RandomBoxes:
    """Axis-aligned filled boxes (official ``RandomRectangleMaskGenerator``, ramp coefficient 1).

    Box sides are drawn from ``bbox_min_size … bbox_max_size`` inclusive (the official upper bound
    is ``bbox_max_size + 1``, exclusive), capped so that the box fits inside the margins.
    """

    margin: int = 10
    bbox_min_size: int = 30
    bbox_max_size: int = 100
    min_times: int = 0
    max_times: int = 3

    def scaled(self, factor: float) -> RandomBoxes:
        """The same boxes for an image ``factor`` times the reference size."""
        return replace(
            self,
            margin=_scale_length(self.margin, factor, 0),
            bbox_min_size=_scale_length(self.bbox_min_size, factor, 1),
            bbox_max_size=_scale_length(self.bbox_max_size, factor, 1),
        )

    def __call__(self, rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
        mask = np.zeros((height, width), np.float32)
        top = int(self.bbox_min_size + 1 + (self.bbox_max_size - self.bbox_min_size))
        top = min(top, height - 2 * self.margin, width - 2 * self.margin)
        times = rng.randint(self.min_times, self.max_times + 1)
        for _ in range(times):
            box_w = rng.randint(self.bbox_min_size, top)
            box_h = rng.randint(self.bbox_min_size, top)
            x0 = rng.randint(self.margin, width - self.margin - box_w + 1)
            y0 = rng.randint(self.margin, height - self.margin - box_h + 1)
            mask[y0 : y0 + box_h, x0 : x0 + box_w] = 1
        return mask


@dataclass(frozen=True)
class MixedMasks:
    """Pick one sampler per mask with the given (renormalised) probabilities."""

    generators: tuple[ScalableMasks, ...]
    probabilities: tuple[float, ...]

    def scaled(self, factor: float) -> MixedMasks:
        return replace(self, generators=tuple(g.scaled(factor) for g in self.generators))

    def __call__(self, rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
        # float32 renormalisation and np.random.choice, as the official MixedMaskGenerator.
        p = np.asarray(self.probabilities, np.float32)
        p /= p.sum()
        kind = rng.choice(len(p), p=p)
        return self.generators[kind](rng, height, width)


@dataclass(frozen=True)
class AreaLimitedMasks:
    """The official evaluation-set recipe (``bin/gen_mask_dataset.py``, ``max_tamper_area``).

    Draw ``variants`` masks, keep those covering at most ``max_area`` of the image, pick one of
    them at random; if none qualifies the official script skips the photo, here we draw again.
    Random draws in the official order: the variants, one ``randint(0, 1)`` per variant (the
    square-crop proposal, which has no choice to make for a square mask), then the pick
    (``choice(n, 1, replace=False)``).
    """

    base: ScalableMasks
    variants: int = 5
    max_area: float = 0.5

    def scaled(self, factor: float) -> AreaLimitedMasks:
        return replace(self, base=self.base.scaled(factor))

    def __call__(self, rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
        while True:
            drawn = [self.base(rng, height, width) for _ in range(self.variants)]
            kept = []
            for mask in drawn:
                rng.randint(0, 1)
                if mask.mean() <= self.max_area:
                    kept.append(mask)
            if kept:
                return kept[int(rng.choice(len(kept), size=1, replace=False)[0])]


@lru_cache(maxsize=64)
def _scaled_to(base: ScalableMasks, factor: float) -> ScalableMasks:
    return base.scaled(factor)


@dataclass(frozen=True)
class SizeScaled:
    """``base`` with its lengths scaled by ``min(height, width) / REFERENCE_SIZE``, so that a
    mask covers the same share of a 128² or 512² crop as of a 256² one (at 256: ``base`` itself,
    bit for bit). Unscaled, a 128² crop got a 60 % hole on average and often a full one."""

    base: ScalableMasks

    def __call__(self, rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
        factor = min(height, width) / REFERENCE_SIZE
        sampler = self.base if factor == 1 else _scaled_to(self.base, factor)
        return sampler(rng, height, width)


def _large() -> ScalableMasks:
    # configs/training/data/abl-04-256-mh-dist.yaml (Big LaMa)
    return MixedMasks(
        (
            IrregularStrokes(max_angle=4, max_len=200, max_width=100, min_times=1, max_times=5),
            RandomBoxes(margin=10, bbox_min_size=30, bbox_max_size=150, min_times=1, max_times=4),
        ),
        (1.0, 1.0),
    )


def _thin() -> ScalableMasks:
    # configs/data_gen/random_thin_256.yaml
    strokes = IrregularStrokes(max_angle=4, max_len=40, max_width=10, min_times=4, max_times=50)
    return AreaLimitedMasks(MixedMasks((strokes,), (1.0,)))


def _medium() -> ScalableMasks:
    # configs/data_gen/random_medium_256.yaml
    strokes = IrregularStrokes(max_angle=4, max_len=100, max_width=50, min_times=4, max_times=5)
    boxes = RandomBoxes(margin=0, bbox_min_size=10, bbox_max_size=50, min_times=1, max_times=5)
    return AreaLimitedMasks(MixedMasks((strokes, boxes), (1.0, 0.3)))


def _thick() -> ScalableMasks:
    # configs/data_gen/random_thick_256.yaml
    strokes = IrregularStrokes(max_angle=4, max_len=200, max_width=100, min_times=1, max_times=5)
    boxes = RandomBoxes(margin=10, bbox_min_size=30, bbox_max_size=150, min_times=1, max_times=3)
    return AreaLimitedMasks(MixedMasks((strokes, boxes), (1.0, 0.3)))


_KINDS = {"large": _large, "thin": _thin, "medium": _medium, "thick": _thick}
MASK_KINDS: tuple[str, ...] = tuple(_KINDS)


def make_mask_generator(kind: str = "large") -> MaskGenerator:
    """The named sampler: ``large`` (Big LaMa training mix), ``thin``, ``medium``, ``thick``,
    with its settings (made for 256² images) scaled to the size of each mask drawn."""
    try:
        return SizeScaled(_KINDS[kind]())
    except KeyError:
        choices = ", ".join(MASK_KINDS)
        raise ValueError(f"unknown mask kind {kind!r}; choose one of {choices}") from None
