"""The training augmentation is the official "distortions" list, run by albumentations.

The reference below is written out from the official ``get_transforms('distortions', out_size)``
(saicinpainting/training/data/datasets.py) with the values albumentations 0.5.2 and imgaug used
for what the official call leaves out; albumentations 2 changed several of those defaults (zero
padding instead of reflection), so each is checked.
"""

from __future__ import annotations

import sys

import albumentations as A
import cv2
import numpy as np
import pytest
from conftest import TINY_TRAIN_ARGS

from lama_model.train.augment import AUGMENTATIONS, make_augmenter
from lama_model.train.cli import main as lama_train
from lama_model.train.data import PhotoFolder
from lama_model.train.official_augment import official_transforms

CROP = 64
REFLECT_101, REPLICATE, LINEAR = cv2.BORDER_REFLECT_101, cv2.BORDER_REPLICATE, cv2.INTER_LINEAR

# (class, probability, parameters): the official list, in order.
OFFICIAL_DISTORTIONS = [
    # IAAPerspective2(scale=(0.0, 0.06)): imgaug PerspectiveTransform, keep_size, mode replicate
    (A.Perspective, 0.5, {"scale": (0.0, 0.06), "keep_size": True, "fit_output": False,
                          "interpolation": LINEAR, "border_mode": REPLICATE}),
    # IAAAffine2(scale=(0.7, 1.3), rotate=(-40, 40), shear=(-0.1, 0.1)): imgaug Affine, order 1,
    # mode "reflect" (imgaug: BORDER_REFLECT_101), x and y scale and shear drawn apart
    (A.Affine, 0.5, {"scale": {"x": (0.7, 1.3), "y": (0.7, 1.3)}, "rotate": (-40.0, 40.0),
                     "shear": {"x": (-0.1, 0.1), "y": (-0.1, 0.1)}, "interpolation": LINEAR,
                     "border_mode": REFLECT_101, "fit_output": False, "keep_ratio": False,
                     "translate_px": {"x": (0, 0), "y": (0, 0)}}),
    (A.PadIfNeeded, 1.0, {"min_height": CROP, "min_width": CROP, "position": "center",
                          "border_mode": REFLECT_101}),
    # 0.5.2: distort_limit 0.05, shift round(U(-0.05, 0.05)) px = 0, BORDER_REFLECT_101
    (A.OpticalDistortion, 0.5, {"distort_limit": (-0.05, 0.05), "mode": "camera",
                                "interpolation": LINEAR, "border_mode": REFLECT_101}),
    (A.RandomCrop, 1.0, {"height": CROP, "width": CROP}),
    (A.HorizontalFlip, 0.5, {}),
    (A.CLAHE, 0.5, {"clip_limit": (1.0, 4.0), "tile_grid_size": (8, 8)}),
    (A.RandomBrightnessContrast, 0.5, {"brightness_limit": (-0.2, 0.2),
                                       "contrast_limit": (-0.2, 0.2), "brightness_by_max": True}),
    (A.HueSaturationValue, 0.5, {"hue_shift_limit": (-5.0, 5.0), "sat_shift_limit": (-30.0, 30.0),
                                 "val_shift_limit": (-5.0, 5.0)}),
    (A.ToFloat, 1.0, {"max_value": 255.0}),
]  # fmt: skip


def _photo(seed: int = 0, height: int = 90, width: int = 120) -> np.ndarray:
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 2, yy * 2, (xx + yy)], -1) % 256
    return (base * 0.7 + rng.rand(height, width, 3) * 60).astype(np.uint8)


def test_official_augmentation_is_the_official_list_with_its_parameters():
    ours = official_transforms(CROP)
    assert [type(t) for t in ours] == [cls for cls, _, _ in OFFICIAL_DISTORTIONS]
    for transform, (cls, p, params) in zip(ours, OFFICIAL_DISTORTIONS, strict=True):
        assert transform.p == p, cls.__name__
        init_args = transform.get_transform_init_args()
        for name, value in params.items():
            assert init_args[name] == value, (cls.__name__, name, init_args[name])


def test_each_sample_is_the_reference_compose_run_with_the_samples_seed():
    """Same seed, same pixels as a Compose built from the reference table: every transform,
    probability and parameter acts as listed (a changed one shows on some of the 24 draws)."""
    reference = A.Compose([cls(**params, p=p) for cls, p, params in OFFICIAL_DISTORTIONS])
    augment = make_augmenter("official", CROP)
    photo = _photo()
    for draw in range(24):
        ours = augment(photo, np.random.RandomState(draw))
        reference.set_random_seed(int(np.random.RandomState(draw).randint(0, 2**31 - 1)))
        expected = reference(image=photo)["image"].transpose(2, 0, 1)
        np.testing.assert_array_equal(ours, expected)


def test_official_borders_are_reflected_or_replicated_never_black():
    """albumentations 2 pads and remaps with zeros by default; the official code (0.5.2,
    imgaug) reflected or replicated, so a bright photo never gets black corners."""
    augment = make_augmenter("official", CROP)
    bright = np.full((50, 40, 3), 200, np.uint8)  # smaller than the crop: padding always runs
    darkest = min(augment(bright, np.random.RandomState(d)).min() for d in range(40))
    assert darkest > 0.3  # brightness/contrast reach 200·0.8 − 51 = 109 at worst, not 0


def test_samples_are_a_function_of_their_seed_in_every_augmentation(tmp_path):
    photo = _photo()
    for kind in AUGMENTATIONS:
        augment = make_augmenter(kind, CROP)
        a, b = augment(photo, np.random.RandomState(7)), augment(photo, np.random.RandomState(7))
        assert a.shape == (3, CROP, CROP) and a.dtype == np.float32
        assert 0 <= a.min() and a.max() <= 1
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, augment(photo, np.random.RandomState(8)))


def test_unknown_augmentation_is_a_clear_error():
    with pytest.raises(ValueError, match="official, numpy, none"):
        make_augmenter("heavy", CROP)


def test_missing_albumentations_is_one_line_naming_the_extra_and_the_fallback(
    tmp_path, train_photos, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "albumentations", None)  # import albumentations fails
    with pytest.raises(ValueError, match=r"lama-inpaint\[train\].*--augment numpy"):
        PhotoFolder(train_photos, crop=CROP)
    monkeypatch.setenv("LAMA_OFFLINE", "1")
    argv = ["fit", str(train_photos), "--steps", "1", *TINY_TRAIN_ARGS]
    assert lama_train([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lama-inpaint[train]" in err, err
    assert lama_train([*argv, "--out", str(tmp_path / "run2"), "--augment", "numpy"]) == 0


@pytest.mark.parametrize(("recorded", "loaded"), [(True, "numpy"), (False, "none")])
def test_runs_recorded_before_augment_had_names_resume_with_the_pipeline_they_used(
    tmp_path, recorded, loaded
):
    import yaml

    from lama_model.train.config import TrainConfig

    path = tmp_path / "config.yaml"
    TrainConfig(data="photos", run_dir=str(tmp_path)).save(path)
    content = yaml.safe_load(path.read_text())
    content["lama_train"]["augment"] = recorded  # what runs wrote when it was --no-augment
    path.write_text(yaml.safe_dump(content))
    assert TrainConfig.load(path).augment == loaded
