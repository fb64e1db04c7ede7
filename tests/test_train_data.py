"""Training data: photo folder, distortions, masks, rank-aware resumable loading."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import write_train_photos
from PIL import Image

from lama_model.train.augment import clahe, reflect101
from lama_model.train.data import (
    PhotoFolder,
    StepSampler,
    decode_photo,
    find_photos,
    make_train_loader,
    make_validation_set,
)

CROP = 64


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """9 generated photos (PNG, JPEG, WebP in nested folders), one broken JPEG, one text file."""
    folder = write_train_photos(tmp_path_factory.mktemp("photos"), count=8)
    rng = np.random.RandomState(1)
    webp = (rng.rand(70, 90, 3) * 255).astype(np.uint8)
    (folder / "b" / "deep").mkdir()
    Image.fromarray(webp).save(folder / "b" / "deep" / "photo.WEBP", lossless=True)
    (folder / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def _batches(loader, count):
    it = iter(loader)
    return [next(it) for _ in range(count)]


def _same(a: dict, b: dict) -> bool:
    return torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_finds_photos_recursively_in_every_format(photos):
    names = sorted(p.name for p in find_photos(photos))
    assert len(names) == 10 and "notes.txt" not in names
    assert {p.suffix.lower() for p in find_photos(photos)} == {".png", ".jpg", ".webp"}


def test_samples_have_the_promised_shapes_and_ranges(photos):
    data = PhotoFolder(photos, crop=CROP)
    for index in range(len(data)):
        sample = data[(0, index)]
        image, mask = sample["image"], sample["mask"]
        assert image.shape == (3, CROP, CROP) and image.dtype == torch.float32
        assert mask.shape == (1, CROP, CROP) and mask.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        assert set(mask.unique().tolist()) <= {0.0, 1.0} and mask.sum() > 0


def test_a_sample_is_a_function_of_seed_epoch_and_index(photos):
    a, b = PhotoFolder(photos, crop=CROP, seed=5), PhotoFolder(photos, crop=CROP, seed=5)
    assert _same(a[(3, 2)], b[(3, 2)])
    b.set_epoch(3)
    assert _same(a[(3, 2)], b[2])
    assert not _same(a[(3, 2)], a[(4, 2)])
    assert not _same(a[(3, 2)], PhotoFolder(photos, crop=CROP, seed=6)[(3, 2)])


def test_broken_photo_is_reported_once_and_skipped(photos, caplog):
    loader = make_train_loader(photos, crop=CROP, batch_size=5, workers=0, seed=1)
    with caplog.at_level(logging.WARNING, logger="lama_model.train.data"):
        batches = _batches(loader, 6)  # three epochs of the 10 files
    warnings = [r for r in caplog.records if "broken.jpg" in r.getMessage()]
    assert len(warnings) == 1
    assert "cannot decode" in warnings[0].getMessage()
    assert all(b["image"].shape == (5, 3, CROP, CROP) for b in batches)


def test_only_broken_photos_is_a_clear_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n nothing")
    with pytest.raises(RuntimeError, match="none of the 1 photos could be decoded"):
        PhotoFolder(tmp_path, crop=CROP)[0]


def test_empty_folder_and_bad_mask_kind_are_clear_errors(tmp_path, photos):
    with pytest.raises(ValueError, match="no JPEG, PNG or WebP photos found"):
        make_train_loader(tmp_path, crop=CROP)
    with pytest.raises(ValueError, match="not a folder of photos"):
        PhotoFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown mask kind"):
        PhotoFolder(photos, mask_kind="huge")


def test_resumed_loader_continues_with_the_same_batches(photos):
    full = _batches(make_train_loader(photos, crop=CROP, batch_size=4, workers=0, seed=2), 7)
    resumed = _batches(
        make_train_loader(photos, crop=CROP, batch_size=4, workers=0, seed=2, start_step=4), 3
    )
    # Batches 4…6 cross the boundary of epochs 1 and 2 (10 photos, 4 per batch).
    assert all(_same(a, b) for a, b in zip(full[4:], resumed, strict=True))


def test_worker_processes_give_the_same_batches(photos):
    inline = _batches(make_train_loader(photos, crop=CROP, batch_size=3, workers=0, seed=4), 4)
    workers = _batches(make_train_loader(photos, crop=CROP, batch_size=3, workers=2, seed=4), 4)
    assert all(_same(a, b) for a, b in zip(inline, workers, strict=True))


def test_ranks_split_each_epoch_like_distributed_sampler():
    ranks = [StepSampler(10, seed=3, rank=r, world_size=2) for r in range(2)]
    one = StepSampler(10, seed=3)
    g = torch.Generator()
    g.manual_seed(3 + 1)
    assert one.epoch_indices(1) == torch.randperm(10, generator=g).tolist()
    for epoch in range(3):
        order = one.epoch_indices(epoch)
        assert ranks[0].epoch_indices(epoch) == order[0::2]
        assert ranks[1].epoch_indices(epoch) == order[1::2]
    # Two ranks with batch b see what one process with batch 2b sees, split strided.
    streams = [iter(s) for s in ranks]
    single = iter(one)
    for _ in range(12):  # 4 epochs' worth of batches of 2 per rank
        big = [next(single) for _ in range(4)]
        assert [next(streams[0]) for _ in range(2)] == big[0::2]
        assert [next(streams[1]) for _ in range(2)] == big[1::2]


def test_uneven_split_pads_by_repeating_the_start_of_the_epoch():
    sampler = StepSampler(5, seed=0, rank=2, world_size=3)
    order = StepSampler(5, seed=0).epoch_indices(0)
    assert sampler.epoch_indices(0) == (order + order[:1])[2::3]
    with pytest.raises(ValueError, match="rank 3"):
        StepSampler(5, rank=3, world_size=3)


def test_unaugmented_small_photo_is_reflect_padded_and_cropped(tmp_path):
    photo = (np.random.RandomState(0).rand(40, 50, 3) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "small.png")
    sample = PhotoFolder(tmp_path, crop=CROP, augment="none")[0]
    padded = np.pad(photo, ((12, 12), (7, 7), (0, 0)), mode="reflect")  # as PadIfNeeded
    expected = torch.from_numpy(padded.transpose(2, 0, 1).astype(np.float32) / 255)
    assert torch.equal(sample["image"], expected)


def test_unaugmented_crop_is_a_window_of_the_photo(tmp_path):
    photo = (np.random.RandomState(0).rand(90, 120, 3) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "big.png")
    data = PhotoFolder(tmp_path, crop=CROP, augment="none")
    corners = set()
    for epoch in range(6):
        crop = (data[(epoch, 0)]["image"].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)
        hits = [
            (y, x)
            for y in range(90 - CROP + 1)
            for x in range(120 - CROP + 1)
            if photo[y, x, 0] == crop[0, 0, 0]
            and np.array_equal(photo[y : y + CROP, x : x + CROP], crop)
        ]
        assert len(hits) == 1
        corners.add(hits[0])
    assert len(corners) > 1  # the crop position is random


def test_augmentation_varies_geometry_flip_and_colour(photos):
    data = PhotoFolder(photos, crop=CROP)
    plain = PhotoFolder(photos, crop=CROP, augment="none")
    means = [data[(e, 0)]["image"].mean().item() for e in range(12)]
    plain_means = [plain[(e, 0)]["image"].mean().item() for e in range(12)]
    assert np.std(means) > np.std(plain_means)  # brightness/contrast/colour changes
    differ = sum(not torch.equal(data[(e, 0)]["image"], plain[(e, 0)]["image"]) for e in range(12))
    assert differ >= 10


def test_reflect101_folds_coordinates_about_the_edge_pixels():
    coords = np.array([-3.0, -0.5, 0.0, 2.5, 4.0, 5.0, 9.0])
    np.testing.assert_allclose(reflect101(coords, 5), [3.0, 0.5, 0.0, 2.5, 4.0, 3.0, 1.0])
    np.testing.assert_array_equal(reflect101(np.array([7.0]), 1), [0.0])


def test_clahe_raises_local_contrast_and_keeps_flat_images_flat():
    rng = np.random.RandomState(0)
    dull = (100 + rng.rand(64, 64) * 20).astype(np.uint8)
    assert clahe(dull, 4.0).std() > 2 * dull.std()
    flat = np.full((64, 64), 77, np.uint8)
    out = clahe(flat, 2.0)
    assert out.std() == 0 and out.dtype == np.uint8


def test_photos_keep_their_size_unless_a_max_side_is_asked(tmp_path):
    """The official code trains on the photos as they are; --max-side N shrinks the long side."""
    Image.new("RGB", (1600, 1200), (10, 200, 30)).save(tmp_path / "big.jpg", quality=90)
    assert decode_photo(tmp_path / "big.jpg").shape == (1200, 1600, 3)
    assert decode_photo(tmp_path / "big.jpg", max_side=800).shape == (600, 800, 3)
    assert decode_photo(tmp_path / "big.jpg", max_side=4000).shape == (1200, 1600, 3)


def test_validation_set_is_fixed_and_centre_cropped(photos, caplog):
    with caplog.at_level(logging.WARNING, logger="lama_model.train.data"):
        first = make_validation_set(photos, size=CROP, count=20, seed=0)
        again = make_validation_set(photos, size=CROP, count=20, seed=0)
    assert len(first) == 9  # every decodable photo once; the broken one reported and skipped
    assert any("broken.jpg" in r.getMessage() for r in caplog.records)
    for a, b in zip(first, again, strict=True):
        assert a["path"] == b["path"] and _same(a, b)
        assert a["image"].shape == (3, CROP, CROP) and a["mask"].shape == (1, CROP, CROP)
    other = make_validation_set(photos, size=CROP, count=3, seed=1, mask_kind="thin")
    assert len(other) == 3
