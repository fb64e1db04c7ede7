"""Our evaluation metrics equal the official LaMa evaluator's, per image and per mask-area bin.

The official numbers in tests/golden/eval/ were made by tests/golden_tools/make_eval_golden.py,
which runs the official ``InpaintingEvaluator`` with its LPIPS (VGG-16 net-lin) and FID
Inception holding the same seeded weights as ours. Tolerances are float32 round-off: the
networks' convolutions may take other kernels on AVX2, AVX-512 or AMX CPUs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lama_model.train.evaluate import TOTAL, Evaluation
from lama_model.train.metrics import (
    area_bins,
    bin_name,
    evaluator_ssim,
    frechet_distance,
    lpips_fid100_f1,
    ssim_fid100_f1,
)

# Measured against float64 runs of the same networks: LPIPS 1.7e-7 relative, features 3.6e-7 of
# their largest, the evaluator's float32 SSIM (E[x²] − E[x]² cancels) 4.7e-6 absolute. Other
# CPUs' kernels sum in other orders and err by as much again; the tolerances leave room for that.
LPIPS_RTOL = 1e-5
SSIM_ATOL = 2e-5
FEATURE_RTOL = 1e-4
# With fewer images than 2048 features the covariances are singular, and the official SciPy
# sqrtm returns tr √(Σ₁Σ₂) with errors of about 1e-4 (measured: 1.06e-4 on a bin of two
# images); ours is exact. The official tables print FID with 4 decimals.
FID_TOLERANCE = {"rel": 1e-4, "abs": 1e-3}


def _tensors(inputs):
    image = torch.from_numpy(inputs["image"].astype(np.float32) / 255)
    inpainted = torch.from_numpy(inputs["inpainted"].astype(np.float32) / 255)
    mask = torch.from_numpy(inputs["mask"].astype(np.float32))
    return inpainted, image, mask


@pytest.fixture(scope="module")
def ours(eval_golden):
    """Our evaluation of the golden inputs in batches of 4, as the official run was made."""
    evaluation = Evaluation(eval_golden.tools.seeded_networks())
    inpainted, image, mask = _tensors(eval_golden.inputs)
    for start in range(0, len(image), 4):
        part = slice(start, start + 4)
        evaluation.add(inpainted[part], image[part], mask[part])
    return evaluation


def test_lpips_per_image_equals_the_official(ours, eval_golden):
    lpips = np.concatenate(ours.scores["lpips"])
    np.testing.assert_allclose(lpips, eval_golden.official["lpips"], rtol=LPIPS_RTOL, atol=1e-7)


def test_ssim_per_image_equals_the_official(eval_golden):
    inpainted, image, _ = _tensors(eval_golden.inputs)
    ssim = evaluator_ssim(inpainted, image).numpy()
    np.testing.assert_allclose(ssim, eval_golden.official["ssim"], rtol=0, atol=SSIM_ATOL)


def test_inception_features_equal_the_official(ours, eval_golden):
    for mine, key in ((ours.features_pred, "features_pred"), (ours.features_target, "features_target")):
        official = eval_golden.official[key]
        scale = np.abs(official).max()
        np.testing.assert_allclose(np.concatenate(mine), official, rtol=FEATURE_RTOL,
                                   atol=FEATURE_RTOL * scale)


def test_every_bin_and_the_total_equal_the_official_evaluator(ours, eval_golden):
    results, table = ours.results(), eval_golden.table
    official_groups = {key.split("/", 1)[1] for key in table if key.startswith("ssim/")}
    assert set(results) == official_groups
    for group, row in results.items():
        # a std of two values is half their difference: its error is not relative to it
        for metric, mean_tol, std_tol in (
            ("lpips", {"rel": LPIPS_RTOL, "abs": 1e-7}, {"rel": 1e-4, "abs": 1e-6}),
            ("ssim", {"rel": 0, "abs": SSIM_ATOL}, {"rel": 0, "abs": SSIM_ATOL}),
        ):
            official = table[f"{metric}/{group}"]
            assert row[metric] == pytest.approx(official["mean"], **mean_tol), (group, metric)
            assert row[f"{metric}_std"] == pytest.approx(official["std"], **std_tol), group
        official_fid = table[f"fid/{group}"]["mean"]
        if math.isnan(official_fid):
            assert math.isnan(row["fid"]), group  # a bin of one image has no FID
        else:
            assert row["fid"] == pytest.approx(official_fid, **FID_TOLERANCE), group
    for summary in ("ssim_fid100_f1", "lpips_fid100_f1"):
        official = table[f"{summary}/total"]["mean"]
        assert results[TOTAL][summary] == pytest.approx(official, rel=1e-5), summary


def test_frechet_distance_of_the_official_features_equals_the_official_fid(eval_golden):
    """The distance alone, on the official network's features: no network round-off."""
    pred, target = eval_golden.official["features_pred"], eval_golden.official["features_target"]
    bins = area_bins(eval_golden.inputs["mask"].reshape(len(pred), -1).mean(-1))
    groups = {TOTAL: np.arange(len(pred))} | {
        bin_name(b): np.flatnonzero(bins == b) for b in set(bins.tolist())
    }
    for group, index in groups.items():
        official = eval_golden.table[f"fid/{group}"]["mean"]
        mine = frechet_distance(pred[index], target[index])
        if math.isnan(official):
            assert len(index) == 1 and math.isnan(mine)
        else:
            assert mine == pytest.approx(official, **FID_TOLERANCE), group


def test_frechet_distance_with_more_images_than_features_uses_the_full_covariance():
    """Above 2048 images the covariance factor is its symmetric square root: same distance."""
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((40, 6)), rng.standard_normal((50, 6)) + 0.3
    s1, s2 = np.cov(pred, rowvar=False), np.cov(target, rowvar=False)
    values = np.linalg.eigvals(s1 @ s2)
    expected = (pred.mean(0) - target.mean(0)) @ (pred.mean(0) - target.mean(0))
    expected += np.trace(s1) + np.trace(s2) - 2 * np.sqrt(values.real.clip(0)).sum()
    assert frechet_distance(pred, target) == pytest.approx(expected, rel=1e-10)


def test_area_bins_follow_the_official_evaluator():
    areas = np.array([0.0, 0.05, 0.1, 0.5, 0.99, 1.0])
    assert area_bins(areas).tolist() == [0, 0, 1, 5, 9, 9]  # an edge goes to the bin above
    assert [bin_name(i) for i in (0, 1, 9)] == ["0-10%", "10-20%", "90-100%"]


def test_f1_summaries_follow_the_official_formulas():
    assert ssim_fid100_f1(0.8, 20.0) == pytest.approx(2 * 0.8 * 0.8 / (1.6 + 1e-3))
    assert ssim_fid100_f1(0.8, 150.0) == 0.0  # an FID of 100 or more is the worst
    assert lpips_fid100_f1(0.2, 20.0) == pytest.approx(2 * 0.8 * 0.8 / (1.6 + 1e-3))
