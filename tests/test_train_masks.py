"""The training mask samplers against the official Big LaMa sampler (fixtures/lama-train/masks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lama_model.train.mask_gen import MASK_KINDS, draw_thick_line, make_mask_generator

SIZE = 256
N_DISTRIBUTION = 20000  # as many as the fixture's statistics and its null distribution use


def _official_first64(train_fixtures_dir) -> np.ndarray:
    packed = np.load(train_fixtures_dir / "masks" / "first64_seed0.npz")["masks_packed"]
    return np.unpackbits(packed, axis=-1)[..., :SIZE].astype(bool)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic."""
    grid = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def _chi2_sf_3dof(x: float) -> float:
    """Survival function of the χ² distribution with 3 degrees of freedom (closed form)."""
    return math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)


def _chi2_two_samples(a: np.ndarray, b: np.ndarray) -> float:
    """p-value of the χ² homogeneity test on two 4-bin count vectors."""
    table = np.stack([a, b]).astype(np.float64)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    return _chi2_sf_3dof(float(((table - expected) ** 2 / expected).sum()))


def test_large_masks_are_the_official_first_64_bit_for_bit(train_fixtures_dir):
    official = _official_first64(train_fixtures_dir)
    generate = make_mask_generator("large")
    rng = np.random.RandomState(0)
    for i in range(64):
        mask = generate(rng, SIZE, SIZE)
        assert mask.dtype == np.float32 and mask.shape == (SIZE, SIZE)
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert np.array_equal(mask > 0, official[i]), f"mask {i} differs"


def test_large_mask_hole_counts_match_the_official_sequence(train_fixtures_dir):
    # 3000 masks (~100 strokes of every width and angle beyond the first 64) keep this quick;
    # the distribution test below draws 20000 more.
    official = np.load(train_fixtures_dir / "masks" / "stats.npz")["hole_pixels"][:3000]
    generate = make_mask_generator("large")
    rng = np.random.RandomState(0)
    ours = np.array([int(generate(rng, SIZE, SIZE).sum()) for _ in range(len(official))])
    assert np.array_equal(ours, official.astype(np.int64))


@pytest.fixture(scope="module")
def large_stats_other_seed():
    """Statistics of 20000 of our masks from a seed the fixture did not use."""
    from scipy import ndimage

    generate = make_mask_generator("large")
    rng = np.random.RandomState(2024)
    holes, comps, heights, widths = [], [], [], []
    eight = np.ones((3, 3), bool)
    for _ in range(N_DISTRIBUTION):
        mask = generate(rng, SIZE, SIZE) > 0
        holes.append(int(mask.sum()))
        comps.append(ndimage.label(mask, structure=eight)[1])
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        heights.append(rows[-1] - rows[0] + 1)
        widths.append(cols[-1] - cols[0] + 1)
    return {
        "fraction": np.array(holes) / SIZE**2,
        "n_components": np.array(comps),
        "bbox_h": np.array(heights),
        "bbox_w": np.array(widths),
    }


def test_large_masks_follow_the_official_distribution(train_fixtures_dir, large_stats_other_seed):
    """The fixture's acceptance test, thresholds from 210 official-vs-official run pairs."""
    official = np.load(train_fixtures_dir / "masks" / "stats.npz")
    ref_fraction = official["hole_pixels"] / SIZE**2
    ours = large_stats_other_seed
    assert ours["fraction"].min() > 0 and ours["fraction"].max() < 1
    assert _ks(ours["fraction"], ref_fraction) < 0.020
    assert abs(ours["fraction"].mean() / ref_fraction.mean() - 1) < 0.025
    assert abs(ours["fraction"].std() / ref_fraction.std() - 1) < 0.025

    def component_counts(n):
        return np.array([(n == 1).sum(), (n == 2).sum(), (n == 3).sum(), (n >= 4).sum()])

    ours_c, ref_c = (
        component_counts(ours["n_components"]),
        component_counts(official["n_components"]),
    )
    total_variation = 0.5 * np.abs(ours_c / ours_c.sum() - ref_c / ref_c.sum()).sum()
    assert total_variation < 0.025
    assert _chi2_two_samples(ours_c, ref_c) > 1e-4
    assert _ks(ours["bbox_h"], official["bbox_h"]) < 0.025
    assert _ks(ours["bbox_w"], official["bbox_w"]) < 0.025


def test_distribution_test_rejects_a_sampler_with_thinner_strokes(train_fixtures_dir):
    """The acceptance statistics are sharp enough to catch a wrong brush width."""
    from lama_model.train.mask_gen import IrregularStrokes, MixedMasks, RandomBoxes

    wrong = MixedMasks(
        (
            IrregularStrokes(max_angle=4, max_len=200, max_width=80, min_times=1, max_times=5),
            RandomBoxes(margin=10, bbox_min_size=30, bbox_max_size=150, min_times=1, max_times=4),
        ),
        (1.0, 1.0),
    )
    rng = np.random.RandomState(7)
    fraction = np.array([wrong(rng, SIZE, SIZE).mean() for _ in range(1500)])
    ref = np.load(train_fixtures_dir / "masks" / "stats.npz")["hole_pixels"] / SIZE**2
    assert _ks(fraction, ref) > 0.020 or abs(fraction.mean() / ref.mean() - 1) > 0.025


def test_same_random_state_gives_the_same_masks_for_every_kind():
    for kind in MASK_KINDS:
        generate = make_mask_generator(kind)
        a = [generate(np.random.RandomState(5), 96, 128) for _ in range(3)]
        b = [generate(np.random.RandomState(5), 96, 128) for _ in range(3)]
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), kind
        assert a[0].shape == (96, 128) and a[0].dtype == np.float32


@pytest.mark.parametrize("kind", ["thin", "medium", "thick"])
def test_evaluation_kinds_cover_at_most_half_the_image(kind):
    generate = make_mask_generator(kind)
    rng = np.random.RandomState(0)
    fractions = np.array([generate(rng, SIZE, SIZE).mean() for _ in range(40)])
    assert fractions.max() <= 0.5
    assert fractions.min() > 0


@pytest.mark.parametrize("size", [128, 512])
def test_large_masks_cover_the_same_share_of_any_crop_as_of_256(size):
    """The official settings are pixels of a 256² crop; scaled with the crop, a 128² or 512²
    crop gets the same mean hole (unscaled, 128² got 60 % and 16 % of holes over 95 %)."""
    generate = make_mask_generator("large")

    def fractions(side: int) -> np.ndarray:
        rng = np.random.RandomState(3)
        return np.array([generate(rng, side, side).mean() for _ in range(300)])

    reference, scaled = fractions(SIZE), fractions(size)
    assert abs(scaled.mean() - reference.mean()) < 0.04, (scaled.mean(), reference.mean())
    assert np.mean(scaled > 0.9) <= np.mean(reference > 0.9) + 0.01
    assert scaled.min() > 0


def test_scaled_samplers_scale_every_length_and_keep_the_counts():
    from lama_model.train.mask_gen import IrregularStrokes, RandomBoxes

    strokes = IrregularStrokes(max_len=200, max_width=100, min_times=1, max_times=5).scaled(0.5)
    assert (strokes.max_len, strokes.max_width, strokes.min_len, strokes.min_width) == (100, 50, 5, 2)
    assert (strokes.min_times, strokes.max_times, strokes.max_angle) == (1, 5, 4)
    boxes = RandomBoxes(margin=10, bbox_min_size=30, bbox_max_size=150).scaled(2.0)
    assert (boxes.margin, boxes.bbox_min_size, boxes.bbox_max_size) == (20, 60, 300)


def test_unknown_mask_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown mask kind 'huge'.*large, thin, medium, thick"):
        make_mask_generator("huge")


def test_thick_line_has_round_caps_and_the_official_half_width():
    mask = np.zeros((64, 64), np.float32)
    draw_thick_line(mask, (20, 32), (44, 32), 10)  # horizontal, thickness 10 → half-width 5
    rows = np.flatnonzero(mask[:, 32])
    assert rows[0] == 27 and rows[-1] == 37
    cols = np.flatnonzero(mask[32])
    assert cols[0] == 15 and cols[-1] == 49  # caps of radius 5 beyond both end points
    assert mask[27, 15] == 0  # the cap is round, not square


def test_thick_line_outside_the_image_is_clipped_not_an_error():
    mask = np.zeros((32, 32), np.float32)
    draw_thick_line(mask, (-40, 5), (80, 40), 7)
    draw_thick_line(mask, (32, 32), (32, 0), 12)
    assert mask.any() and mask.shape == (32, 32)
