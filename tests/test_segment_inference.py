"""The segmenter's inference paths give the plain modules' results.

The served decoder keeps the image's share of the work with the embedding, reorders the
cross-attentions' products and runs the upscaling as matrix products; these tests hold each
of those to the official order of operations (written out below from the official
``segment_anything`` code, on the modules' own layers) on a seeded model of MobileSAM's
layout, at float32 round-off: 1e-4 absolute, plus 1e-5 relative where the seeded
decoder's mask logits reach about 50 (a misplaced bias, head or GELU moves values by 1e-3
or more). The golden tests check the official results themselves on a
one-block decoder.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lama_model.interface import ImageEmbedding
from lama_model.segment.net.decoder import Attention
from lama_model.segment.predictor import SamEmbedding, SegmentPredictor

ATOL = 1e-4
RTOL = 1e-5


def official_two_way(transformer, image, image_pe, tokens):
    """``segment_anything``'s TwoWayTransformer.forward, on the modules' plain attention."""
    keys, key_pe = image.flatten(2).permute(0, 2, 1), image_pe.flatten(2).permute(0, 2, 1)
    queries = tokens
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(queries, queries, queries)
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(q, q, queries)
        queries = layer.norm1(queries)
        q, k = queries + tokens, keys + key_pe
        queries = layer.norm2(queries + layer.cross_attn_token_to_image(q, k, keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        q, k = queries + tokens, keys + key_pe
        keys = layer.norm4(keys + layer.cross_attn_image_to_token(k, q, queries))
    out = transformer.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
    return transformer.norm_final_attn(queries + out), keys


def official_mask_decoder(decoder, image, image_pe, sparse, dense):
    """``segment_anything``'s MaskDecoder.predict_masks: all four masks and their IoU."""
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.expand(len(sparse), -1, -1), sparse], dim=1)
    hs, src = official_two_way(decoder.transformer, image + dense, image_pe, tokens)
    b, (c, h, w) = len(src), image.shape[1:]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack(
        [mlp(hs[:, 1 + i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    masks = (hyper_in @ upscaled.flatten(2)).view(b, -1, *upscaled.shape[-2:])
    return masks, decoder.iou_prediction_head(hs[:, 0])


def seeded_attention() -> Attention:
    torch.manual_seed(1)
    attention = Attention(64, 8, downsample_rate=2)
    with torch.no_grad():
        for param in attention.parameters():
            param.normal_(0.0, 0.3)
    return attention


def test_few_queries_attention_equals_plain_attention():
    """Prompt tokens over image tokens without projecting the image tokens."""
    attention = seeded_attention()
    q, k, v = torch.randn(2, 7, 64), torch.randn(2, 300, 64), torch.randn(2, 300, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            attention.few_queries(q, k, v), attention(q, k, v), atol=ATOL, rtol=0
        )


def test_few_keys_attention_equals_plain_attention():
    """Image tokens over prompt tokens without projecting the image tokens or the heads."""
    attention = seeded_attention()
    q, k, v = torch.randn(2, 300, 64), torch.randn(2, 7, 64), torch.randn(2, 7, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            attention.few_keys(q, k, v), attention(q, k, v), atol=ATOL, rtol=0
        )


def test_few_keys_adds_the_residual_in_its_product():
    """The residual image tokens plus the attention, the output bias folded into the values."""
    attention = seeded_attention()
    q, k, v = torch.randn(2, 300, 64), torch.randn(2, 7, 64), torch.randn(2, 7, 64)
    residual = torch.randn(2, 300, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            attention.few_keys(q, k, v, residual), residual + attention(q, k, v), atol=ATOL, rtol=0
        )


def test_queries_projected_once_give_plain_attention():
    """The first block's image tokens projected per image, then any prompt's tokens over them."""
    attention = seeded_attention()
    q, k, v = torch.randn(1, 300, 64), torch.randn(3, 7, 64), torch.randn(3, 7, 64)
    residual = torch.randn(1, 300, 64)
    with torch.no_grad():
        kept = attention.heads(q, attention.q_proj)
        torch.testing.assert_close(
            attention.projected_queries(kept, k, v, residual),
            residual + attention(q.expand(3, -1, -1), k, v),
            atol=ATOL,
            rtol=0,
        )


@pytest.mark.parametrize("multimask", [False, True])
def test_two_block_decoder_matches_official_order(small_segmenter, multimask):
    """MobileSAM's two-block decoder, the first block's image side kept per image, the
    upscaling channels-last: the official masks and IoU.

    The official order runs in float64, the exact value to 1e-13: run in float32 it has
    round-off of its own (1.2e-4 on this seed's mask logits of up to 48, where the served
    path's is 7e-5), and the bound is for the served path's alone."""
    model = small_segmenter
    g = model.config.embedding_size
    torch.manual_seed(2)
    features, points = torch.randn(1, 64, g, g), torch.rand(3, 2, 2) * 256
    exact = copy.deepcopy(model.mask_decoder).double()
    with torch.no_grad():
        sparse, dense = model.prompt_encoder((points, torch.tensor([[1, 0]] * 3)), None)
        image_pe = model.prompt_encoder.dense_pe()
        masks, iou = model.mask_decoder(features, image_pe, sparse, dense, multimask)
        official_masks, official_iou = official_mask_decoder(
            exact, *(x.double() for x in (features, image_pe, sparse, dense))
        )
    chosen = slice(1, None) if multimask else slice(0, 1)
    assert masks.shape == (3, 3 if multimask else 1, 4 * g, 4 * g)
    official_masks = official_masks[:, chosen].float()
    torch.testing.assert_close(masks, official_masks, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(iou, official_iou[:, chosen].float(), atol=ATOL, rtol=RTOL)


def test_kept_decoder_image_serves_every_prompt(small_segmenter):
    """The per-image part computed once gives each prompt what recomputing it gives."""
    model = small_segmenter
    torch.manual_seed(3)
    features = torch.randn(1, 64, model.config.embedding_size, model.config.embedding_size)
    with torch.no_grad():
        kept = model.decoder_image(features)
        for box in ([[10.0, 20.0, 90.0, 200.0]], [[100.0, 5.0, 250.0, 60.0]]):
            boxes = torch.tensor(box)
            for got, expected in zip(
                model.decode(kept, None, boxes, False),
                model.decode(features, None, boxes, False),
                strict=True,
            ):
                torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_predictor_keeps_decoder_work_with_embedding(small_segmenter):
    """``embed`` returns the decoder's per-image work with the features; a bare
    ImageEmbedding of the same features (made elsewhere) gets the same masks."""
    predictor = SegmentPredictor(small_segmenter, torch.device("cpu"), "small")
    image = np.random.default_rng(4).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    embedding = predictor.embed(image)
    assert isinstance(embedding, SamEmbedding)
    bare = ImageEmbedding(embedding.features, embedding.original_size, embedding.input_size)
    points, labels = np.array([[40.0, 50.0]]), np.array([1])
    kept_logits, kept_iou = predictor.predict_logits(embedding, None, points, labels)
    bare_logits, bare_iou = predictor.predict_logits(bare, None, points, labels)
    assert kept_logits.shape == (1, 3, 120, 90)
    torch.testing.assert_close(kept_logits, bare_logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(kept_iou, bare_iou, atol=1e-6, rtol=0)


def test_served_encoder_matches_plain_modules(small_segmenter):
    """Batch norms folded, channels-last, convolution and GELU fused: the plain modules'
    results (batch norms apart, contiguous tensors, autograd on), after the patch embedding
    and the convolution stage (where a GELU's error is not yet averaged away) and at the end."""
    torch.manual_seed(5)
    image = torch.randn(1, 3, 256, 256)
    served = SegmentPredictor(copy.deepcopy(small_segmenter), torch.device("cpu"), "small")
    results = []
    for model in (small_segmenter, served.model):
        encoder = model.image_encoder
        with torch.inference_mode(model is served.model):
            patches = encoder.patch_embed(image)
            results.append([patches, encoder.layers[0](patches), encoder(image)])
    assert results[1][2].shape == (1, 64, 8, 8)
    for plain, fast in zip(*results, strict=True):
        torch.testing.assert_close(fast, plain.detach(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("prompts", [3, 1])
def test_best_only_decodes_the_mask_of_highest_iou(small_segmenter, prompts):
    """Three masks per prompt: ``best_only`` upscales only each prompt's best (a single
    prompt runs only its best mask's MLP, several pick theirs from all three)."""
    model = small_segmenter
    torch.manual_seed(6)
    g = model.config.embedding_size
    features, points = torch.randn(1, 64, g, g), torch.rand(3, 1, 2)[:prompts] * 256
    prompt = (points, torch.ones(prompts, 1, dtype=torch.long))
    with torch.no_grad():
        masks, iou = model.decode(features, prompt, None, True)
        best_masks, best_iou = model.decode(features, prompt, None, True, best_only=True)
    best, rows = iou.argmax(dim=1), torch.arange(prompts)
    assert best_masks.shape == (prompts, 1, 4 * g, 4 * g)
    torch.testing.assert_close(best_iou[:, 0], iou[rows, best], atol=1e-6, rtol=0)
    # One prompt's one mask is a matrix-vector product, not the three masks' matrix product:
    # float32 round-off of a few units in the last place (5e-7 relative) on logits up to 4.
    rtol = 0 if prompts > 1 else 1e-6
    torch.testing.assert_close(best_masks[:, 0], masks[rows, best], atol=1e-6, rtol=rtol)


@pytest.mark.parametrize("input_size", [(256, 256), (256, 171), (97, 256), (256, 9)])
def test_masks_of_the_cropped_grid_equal_the_official_upscaling(small_segmenter, input_size):
    """The served decoder upscales only the image tokens outside the padding
    (:meth:`Segmenter.mask_grid`) and resizes to the original size only when it differs: the
    official pixels (whole grid upscaled to the padded input, cropped, resized) all the same."""
    model = small_segmenter.eval()
    torch.manual_seed(7)
    g = model.config.embedding_size
    features, points = torch.randn(1, 64, g, g), torch.rand(1, 2, 2) * 90
    prompt = (points, torch.tensor([[1, 0]]))
    size = model.config.image_size
    original = (input_size[0] * 3, input_size[1] * 3)
    with torch.no_grad():
        full, _ = model.decode(features, prompt, None, True)
        grid = model.mask_grid(input_size)
        cropped, _ = model.decode(features, prompt, None, True, grid=grid)
        for target in (input_size, original):
            official = F.interpolate(full, (size, size), mode="bilinear", align_corners=False)
            official = official[..., : input_size[0], : input_size[1]]
            official = F.interpolate(official, target, mode="bilinear", align_corners=False)
            served = model.postprocess(cropped, input_size, target)
            torch.testing.assert_close(served, official, atol=ATOL, rtol=RTOL)
    assert grid[1] < g or input_size[1] == size  # the padding's tokens were left out
