"""The official "distortions" augmentation, run by albumentations itself (the ``train`` extra).

Big LaMa trains with ``get_transforms('distortions', out_size)`` (``saicinpainting/training/data/
datasets.py``; ``transform_variant: distortions`` in ``configs/training/data/
abl-04-256-mh-dist.yaml``). That list was written for albumentations 0.5.2 and imgaug, whose
defaults differ from today's, so every parameter is spelled out below with the value the official
code ran with:

* ``IAAPerspective2(scale=(0.0, 0.06))`` and ``IAAAffine2(scale=(0.7, 1.3), rotate=(-40, 40),
  shear=(-0.1, 0.1))`` wrap imgaug's ``PerspectiveTransform`` (edges replicated) and ``Affine``
  (x and y scaled independently, shear in degrees, bilinear, ``mode="reflect"`` which imgaug maps
  to OpenCV's BORDER_REFLECT_101). imgaug does not install beside NumPy 2; albumentations 2
  carries ports of both (``A.Perspective``, ``A.Affine``), used here with those settings.
* ``PadIfNeeded`` and ``OpticalDistortion`` reflected the border (BORDER_REFLECT_101) in 0.5.2;
  albumentations 2 pads with zeros unless told. 0.5.2's optical-distortion shift was
  ``round(uniform(-0.05, 0.05))`` pixels, always 0, so the camera model without shift is exact.
* CLAHE (clip limit 1…4, 8×8 tiles, on CIELAB L), brightness/contrast ±0.2 of the maximum,
  hue ±5, saturation ±30, value ±5, and the horizontal flip keep 0.5.2's defaults.

albumentations draws from its own generators; each sample seeds them from the sample's
``RandomState`` (:func:`lama_model.train.data.sample_rng`), so a sample stays a function of
``(seed, epoch, index)`` whatever process makes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Said when albumentations is missing; the error names the extra and the explicit fallback.
ALBUMENTATIONS_MISSING = (
    "the official augmentation (--augment official) needs albumentations: "
    "pip install 'lama-inpaint[train]', or pass --augment numpy (an approximation, "
    "not the official pipeline)"
)


def import_albumentations() -> tuple[Any, Any]:
    """``(albumentations, cv2)``, or ValueError with :data:`ALBUMENTATIONS_MISSING`."""
    try:
        import albumentations
        import cv2
    except ImportError:
        raise ValueError(ALBUMENTATIONS_MISSING) from None
    return albumentations, cv2


def official_transforms(crop: int) -> list[Any]:
    """The official ``distortions`` list for ``crop × crop`` outputs, as albumentations 2
    transforms with the parameters albumentations 0.5.2 and imgaug ran it with."""
    A, cv2 = import_albumentations()
    linear, reflect = cv2.INTER_LINEAR, cv2.BORDER_REFLECT_101
    return [
        A.Perspective(scale=(0.0, 0.06), keep_size=True, fit_output=False, interpolation=linear,
                      border_mode=cv2.BORDER_REPLICATE, p=0.5),  # fmt: skip
        A.Affine(scale={"x": (0.7, 1.3), "y": (0.7, 1.3)}, rotate=(-40, 40),
                 shear={"x": (-0.1, 0.1), "y": (-0.1, 0.1)}, interpolation=linear,
                 fit_output=False, keep_ratio=False, border_mode=reflect, p=0.5),  # fmt: skip
        A.PadIfNeeded(min_height=crop, min_width=crop, position="center", border_mode=reflect),
        A.OpticalDistortion(distort_limit=(-0.05, 0.05), mode="camera", interpolation=linear,
                            border_mode=reflect, p=0.5),  # fmt: skip
        A.RandomCrop(height=crop, width=crop),
        A.HorizontalFlip(p=0.5),
        A.CLAHE(clip_limit=(1.0, 4.0), tile_grid_size=(8, 8), p=0.5),
        A.RandomBrightnessContrast(brightness_limit=(-0.2, 0.2), contrast_limit=(-0.2, 0.2),
                                   brightness_by_max=True, p=0.5),  # fmt: skip
        A.HueSaturationValue(hue_shift_limit=(-5, 5), sat_shift_limit=(-30, 30),
                             val_shift_limit=(-5, 5), p=0.5),  # fmt: skip
        A.ToFloat(max_value=255),
    ]


class OfficialDistortions:
    """A training crop by the official pipeline: uint8 H×W×3 photo → float32 3×crop×crop."""

    def __init__(self, crop: int) -> None:
        A, cv2 = import_albumentations()
        # The loader's worker processes are the parallelism; OpenCV's own thread pool in each
        # of them would only compete with the training loop for the cores.
        cv2.setNumThreads(1)
        self.crop = crop
        self.compose = A.Compose(official_transforms(crop))

    def __call__(self, image: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        self.compose.set_random_seed(int(rng.randint(0, 2**31 - 1)))
        out = self.compose(image=image)["image"]
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)
