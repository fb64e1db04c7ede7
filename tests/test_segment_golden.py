"""MobileSAM against the official code: the same seeded tiny checkpoint, the same outputs.

The fixtures (tests/golden/segment/) were made by tests/golden_tools/make_segment_golden.py
running the official ``segment-anything`` package and MobileSAM's ``tiny_vit_sam.py``.
Tolerance as for the generator's golden test: float32 throughout, so the only differences
are the order of float32 sums, which varies with the CPU's kernels (AVX2, AVX-512, AMX);
1e-4 absolute on values of magnitude about 1 to 4 (the encoder's features, mask logits)
leaves room for that and nothing else (a wrong bias or norm moves them by 1e-2 or more).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lama_model.segment.net.model import MASK_THRESHOLD

ATOL = 1e-4
PROMPTS = {  # the prompts of make_segment_golden.PROMPTS, as predict() takes them
    "box": ((10.0, 30.0, 50.0, 70.0), None, None),
    "point": (None, [[30.0, 50.0]], [1]),
    "points": (None, [[30.0, 50.0], [5.0, 5.0], [40.0, 60.0]], [1, 0, 1]),
    "box_points": ((10.0, 30.0, 50.0, 70.0), [[30.0, 50.0], [60.0, 90.0]], [1, 0]),
}


@pytest.fixture(scope="module")
def embedding(tiny_segmenter, segment_golden):
    return tiny_segmenter.embed(segment_golden["image"].numpy())


def arrays(prompt):
    box, points, labels = prompt
    return (
        box,
        None if points is None else np.array(points),
        None if labels is None else np.array(labels),
    )


def test_image_encoder_matches_official_predictor(embedding, segment_golden):
    """Resize of the longest side to 1024, normalise, pad and the TinyViT encoder."""
    expected = segment_golden["features"]
    assert embedding.input_size == (1024, 683) and embedding.original_size == (96, 64)
    torch.testing.assert_close(embedding.features, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(PROMPTS))
def test_prompt_encoder_matches_official(tiny_segmenter, segment_golden, name):
    golden = segment_golden[name]
    points = None
    if golden["input_points"] is not None:
        labels = torch.tensor(PROMPTS[name][2])[None]
        points = (golden["input_points"][None], labels)
    boxes = None if golden["input_box"] is None else golden["input_box"][None]
    with torch.no_grad():
        sparse, dense = tiny_segmenter.model.prompt_encoder(points, boxes)
    torch.testing.assert_close(sparse, golden["sparse"], atol=ATOL, rtol=0)
    assert dense.shape[-2:] == segment_golden["features"].shape[-2:]


def test_mask_decoder_matches_official(tiny_segmenter, segment_golden):
    """The decoder alone, on the official features and prompt embeddings (box prompt)."""
    model = tiny_segmenter.model
    golden = segment_golden["box"]
    dense = model.prompt_encoder(None, golden["input_box"][None])[1]
    with torch.no_grad():
        low_res, iou = model.mask_decoder(
            segment_golden["features"],
            model.prompt_encoder.dense_pe(),
            golden["sparse"],
            dense,
            False,
        )
    torch.testing.assert_close(low_res[0], golden["low_res"], atol=ATOL, rtol=0)
    torch.testing.assert_close(iou[0], golden["iou"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(PROMPTS))
def test_predictor_matches_official(tiny_segmenter, embedding, segment_golden, name):
    """Box, one point (three masks), points of both labels, box + points: logits, IoU, mask."""
    golden = segment_golden[name]
    logits, iou = tiny_segmenter.predict_logits(embedding, *arrays(PROMPTS[name]))
    torch.testing.assert_close(logits[0], golden["logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(iou[0], golden["iou"], atol=ATOL, rtol=0)
    mask = tiny_segmenter.predict(embedding, *arrays(PROMPTS[name]))
    best = golden["logits"][int(golden["iou"].argmax())].numpy()
    decided = np.abs(best - MASK_THRESHOLD) > ATOL  # pixels whose side no rounding can flip
    assert mask.dtype == bool and mask.shape == (96, 64)
    np.testing.assert_array_equal(mask[decided], best[decided] > MASK_THRESHOLD)


def test_single_point_chooses_among_three_masks(segment_golden):
    """SAM's guidance for an ambiguous prompt: three masks, the best predicted IoU kept."""
    assert segment_golden["point"]["logits"].shape[0] == 3
    assert segment_golden["box"]["logits"].shape[0] == 1
