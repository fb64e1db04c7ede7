"""Checking a prompt before it reaches the model: each mistake is one line of PromptError."""

from __future__ import annotations

import numpy as np

from lama_model.errors import PromptError
from lama_model.segment import MAX_POINTS


def check_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """``box`` (x0, y0, x1, y1) as a float array, once it is a non-empty box that overlaps
    an image of ``size`` (h, w)."""
    values = np.asarray(box, dtype=np.float64)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise PromptError(f"a box is 4 finite numbers x0, y0, x1, y1, not {box!r}")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise PromptError(
            f"empty box ({x0:g}, {y0:g}, {x1:g}, {y1:g}): x1 must exceed x0 and y1 exceed y0"
        )
    h, w = size
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise PromptError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w}x{h} image")
    return values


def check_points(
    points: np.ndarray, labels: np.ndarray | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 2) x, y and labels (N,) 0/1, once they agree and fit the limits."""
    coords = np.asarray(points, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2 or not len(coords) or not np.isfinite(coords).all():
        raise PromptError(f"points are an (N, 2) array of finite x, y, not shape {coords.shape}")
    if len(coords) > MAX_POINTS:
        raise PromptError(f"{len(coords)} points: at most {MAX_POINTS} per prompt")
    if labels is None:
        raise PromptError("points need labels: 1 for the object, 0 for the background")
    marks = np.asarray(labels)
    if marks.shape != (len(coords),):
        raise PromptError(f"{len(coords)} points but labels of shape {marks.shape}")
    if not np.isin(marks, (0, 1)).all():
        raise PromptError("labels must be 1 (object) or 0 (background)")
    h, w = size
    outside = (coords[:, 0] < 0) | (coords[:, 0] >= w) | (coords[:, 1] < 0) | (coords[:, 1] >= h)
    if outside.any():
        x, y = coords[np.argmax(outside)]
        raise PromptError(f"point ({x:g}, {y:g}) lies outside the {w}x{h} image")
    return coords, marks.astype(np.int64)
