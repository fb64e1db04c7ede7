"""The whole segmenter (``image_encoder``, ``prompt_encoder``, ``mask_decoder``) and its builder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lama_model.segment.config import PIXEL_MEAN, PIXEL_STD, SegmenterConfig
from lama_model.segment.net.decoder import (
    DecoderImage,
    MaskDecoder,
    PromptEncoder,
    TwoWayTransformer,
)
from lama_model.segment.net.tiny_vit import TinyViT

MASK_THRESHOLD = 0.0  # mask logits above this are the object (the official Sam's threshold)


class Segmenter(nn.Module):
    """MobileSAM: :meth:`encode` once per image, :meth:`decode` once per prompt."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        self.image_encoder = TinyViT(config)
        self.prompt_encoder = PromptEncoder(
            config.prompt_dim, config.embedding_size, config.image_size, config.mask_in_chans
        )
        transformer = TwoWayTransformer(
            config.decoder_depth, config.prompt_dim, config.decoder_heads, config.decoder_mlp_dim
        )
        self.mask_decoder = MaskDecoder(
            config.prompt_dim,
            transformer,
            config.num_multimask_outputs,
            config.iou_head_depth,
            config.iou_head_hidden_dim,
        )
        # Not saved (as in the official Sam): the normalisation is the config's.
        self.register_buffer(
            "pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False
        )
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) float 0..255, longest side already ``image_size`` → normalised and
        zero-padded at the bottom and right to a square."""
        x = (image - self.pixel_mean) / self.pixel_std
        size = self.config.image_size
        return F.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2]))

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """See :meth:`preprocess`; returns the image embedding (1, C, g, g)."""
        return self.image_encoder(self.preprocess(image))

    def decoder_image(
        self, features: torch.Tensor, image_pe: torch.Tensor | None = None
    ) -> DecoderImage:
        """The decoder's work on the image embedding (1, C, g, g) that no prompt changes,
        to keep beside it. ``image_pe``: :meth:`PromptEncoder.dense_pe`, if the caller keeps
        it (it depends on the weights alone)."""
        if image_pe is None:
            image_pe = self.prompt_encoder.dense_pe()
        dense = self.prompt_encoder.no_mask_dense()
        return self.mask_decoder.image_tokens(features, image_pe, dense)

    def decode(
        self,
        features: torch.Tensor | DecoderImage,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        multimask: bool,
        best_only: bool = False,
        grid: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution mask logits and predicted IoU for prompts in input-size pixels,
        from the image embedding or its :meth:`decoder_image` (``best_only``, ``grid``: see
        :meth:`MaskDecoder.decode`; :meth:`mask_grid` gives the ``grid`` an image needs)."""
        if isinstance(features, torch.Tensor):
            features = self.decoder_image(features)
        sparse, _ = self.prompt_encoder(points, boxes)  # the dense part is in decoder_image
        return self.mask_decoder.decode(features, sparse, multimask, best_only, grid)

    @property
    def mask_scale(self) -> int:
        """The input's size over the low-resolution masks' (4 for SAM: 1024 over 256); the
        masks are 4× the embedding's grid."""
        return self.config.image_size // (4 * self.config.embedding_size)

    def mask_grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The rows and columns of the image tokens whose masks :meth:`postprocess` reads for
        an image of ``input_size`` (h, w): the rest lie in the padding. Bilinear upscaling by
        s reads, for the input's pixel rows below h, low-resolution rows up to ⌈h/s⌉ (the
        last one only partly); each token is 4×4 low-resolution pixels."""
        full, scale = self.config.embedding_size, self.mask_scale
        low = [min(4 * full, -(-side // scale) + 1) for side in input_size]
        rows, cols = (min(full, -(-n // 4)) for n in low)
        return rows, cols

    def postprocess(
        self, masks: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """Low-resolution logits (of the whole grid, or of its top-left :meth:`mask_grid`) to
        the padded input's scale, cropped to the image, then to its original size.

        The official code upscales the whole grid to the padded input (256² to 1024²) before
        cropping; the scale is the same either way, so the pixels kept are the same, and an
        image whose size is already the input's is not resized a second time."""
        scaled = (self.mask_scale * masks.shape[-2], self.mask_scale * masks.shape[-1])
        masks = F.interpolate(masks, scaled, mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        if tuple(original_size) == tuple(input_size):
            return masks
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)


def build_segmenter(config: SegmenterConfig) -> Segmenter:
    """A segmenter of ``config`` with fresh weights, in evaluation mode."""
    return Segmenter(config).eval()
