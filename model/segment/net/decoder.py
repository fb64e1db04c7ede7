"""SAM's prompt encoder, two-way transformer and mask decoder as plain modules.

Written from the official ``segment_anything/modeling`` (prompt_encoder.py, transformer.py,
mask_decoder.py), with its parameter names so official checkpoints load strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lama_model.segment.net.tiny_vit import LayerNorm2d

# Labels of the sparse prompt tokens: -1 pads a point prompt that has no box, 2 and 3 are a
# box's corners (SAM's numbering of point_embeddings).
PAD_LABEL = -1
BOX_CORNERS = (2, 3)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of (x, y) in [0, 1]: (…, 2) → (…, 2·num_pos_feats)."""

    def __init__(self, num_pos_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """The encoding of each cell centre of an h × w grid: (2·num_pos_feats, h, w)."""
        ones = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device)
        y = (ones.cumsum(dim=0) - 0.5) / h
        x = (ones.cumsum(dim=1) - 0.5) / w
        return self.encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def at(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """The encoding of pixel coordinates (x, y) in an image of ``image_size`` (h, w)."""
        coords = coords.clone()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self.encode(coords.float())


class PromptEncoder(nn.Module):
    """Points and boxes → sparse tokens; no mask → the learned dense "no mask" embedding."""

    def __init__(self, embed_dim: int, embedding_size: int, image_size: int, mask_in_chans: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = (image_size, image_size)
        self.image_embedding_size = (embedding_size, embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        # Mask prompts are not offered; the layers stay so official checkpoints load strictly.
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> torch.Tensor:
        """The positional encoding of the image embedding's grid: (1, C, h, w)."""
        return self.pe_layer.grid(*self.image_embedding_size).unsqueeze(0)

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # to the pixel's centre
        if pad:  # a point prompt without a box ends with a "not a point" token
            points = torch.cat([points, torch.zeros_like(points[:, :1])], dim=1)
            labels = torch.cat([labels, torch.full_like(labels[:, :1], PAD_LABEL)], dim=1)
        embedding = self.pe_layer.at(points, self.input_image_size)
        embedding[labels == PAD_LABEL] = 0.0
        embedding[labels == PAD_LABEL] += self.not_a_point_embed.weight
        embedding[labels == 0] += self.point_embeddings[0].weight
        embedding[labels == 1] += self.point_embeddings[1].weight
        return embedding

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = self.pe_layer.at((boxes + 0.5).reshape(-1, 2, 2), self.input_image_size)
        corners[:, 0, :] += self.point_embeddings[BOX_CORNERS[0]].weight
        corners[:, 1, :] += self.point_embeddings[BOX_CORNERS[1]].weight
        return corners

    def forward(
        self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (B, N, C) and dense (B, C, h, w) embeddings of the prompts (1 image)."""
        device = self.no_mask_embed.weight.device
        batch = len(points[0]) if points is not None else len(boxes) if boxes is not None else 1
        sparse = torch.empty((batch, 0, self.embed_dim), device=device)
        if points is not None:
            sparse = torch.cat([sparse, self.embed_points(*points, pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self.embed_boxes(boxes)], dim=1)
        return sparse, self.no_mask_dense().expand(batch, -1, -1, -1)

    def no_mask_dense(self) -> torch.Tensor:
        """The dense embedding of a prompt without a mask (1, C, h, w): the same for all."""
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return dense.expand(1, -1, *self.image_embedding_size)


class Attention(nn.Module):
    """Multi-head attention whose inner width is the input's / ``downsample_rate``."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        inner = dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def heads(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        """``x`` (B, N, dim) projected by ``proj`` and split into heads: (B, heads, N, d)."""
        x = proj(x)
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Projected heads (see :meth:`heads`) to the output (B, N, dim)."""
        # softmax(q·kᵀ/√d)·v, the official formula, in one fused kernel.
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(
            self.heads(q, self.q_proj), self.heads(k, self.k_proj), self.heads(v, self.v_proj)
        )


class MLPBlock(nn.Module):
    """``lin1``, ReLU, ``lin2`` (the two-way transformer's feed-forward)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


@dataclass(frozen=True)
class ImageSide:
    """What a two-way block computes from the image tokens alone: the keys and values the
    prompt tokens attend to, and the queries with which the image attends back to them.

    In the first block the image tokens are the encoder's features plus the "no mask"
    embedding (mask prompts are not offered), so these do not depend on the prompt: they are
    computed once per image (:meth:`MaskDecoder.image_tokens`) instead of once per prompt."""

    keys: torch.Tensor  # (B, HW, dim): the image tokens entering the block
    token_to_image_k: torch.Tensor  # (B, heads, HW, d)
    token_to_image_v: torch.Tensor  # (B, heads, HW, d)
    image_to_token_q: torch.Tensor  # (B, heads, HW, d)


@dataclass(frozen=True)
class DecoderImage:
    """The mask decoder's inputs that do not depend on the prompt, kept once per image:
    the first two-way block's :class:`ImageSide`, the positional encoding of the image
    tokens (1, HW, dim) and the grid they came from (h, w)."""

    first: ImageSide
    key_pe: torch.Tensor
    size: tuple[int, int]


class TwoWayAttentionBlock(nn.Module):
    """Tokens attend to themselves, tokens to the image, feed-forward, the image to tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate=2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def image_side(self, keys: torch.Tensor, key_pe: torch.Tensor) -> ImageSide:
        """The projections of the image tokens ``keys`` (B, HW, dim) this block uses."""
        with_pe = keys + key_pe
        to_image, to_token = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return ImageSide(
            keys,
            to_image.heads(with_pe, to_image.k_proj),
            to_image.heads(keys, to_image.v_proj),
            to_token.heads(with_pe, to_token.q_proj),
        )

    def forward(
        self, queries: torch.Tensor, image: ImageSide, query_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined prompt tokens (B, N, dim) and image tokens (B, HW, dim)."""
        if self.skip_first_layer_pe:  # the first block's queries are the prompts themselves
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        to_image, to_token = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        q = to_image.heads(queries + query_pe, to_image.q_proj)
        out = to_image.attend(q, image.token_to_image_k, image.token_to_image_v)
        queries = self.norm2(queries + out)
        queries = self.norm3(queries + self.mlp(queries))
        k = to_token.heads(queries + query_pe, to_token.k_proj)
        out = to_token.attend(image.image_to_token_q, k, to_token.heads(queries, to_token.v_proj))
        return queries, self.norm4(image.keys + out)


class TwoWayTransformer(nn.Module):
    """Prompt tokens and image features refine each other (SAM's decoder transformer)."""

    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, skip_first_layer_pe=i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, first: ImageSide, key_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``first``: the first block's :class:`ImageSide` (of ``layers[0].image_side``),
        ``key_pe`` (1, HW, dim), ``tokens`` (B, N, dim) → refined tokens and image tokens."""
        queries, keys, image = tokens, first.keys, first
        for i, layer in enumerate(self.layers):
            if i:  # after the first block the image tokens depend on the prompt
                image = layer.image_side(keys, key_pe)
            queries, keys = layer(queries, image, tokens)
        out = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + out), keys


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    """Image features + prompt tokens → low-resolution mask logits and their predicted IoU.

    Four mask tokens: the first answers an unambiguous prompt, the other three the
    ambiguous one (whole, part, sub-part).
    """

    def __init__(
        self,
        dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int,
        iou_depth: int,
        iou_hidden: int,
    ):
        super().__init__()
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, iou_hidden, self.num_mask_tokens, iou_depth)

    def image_tokens(
        self, image: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor
    ) -> DecoderImage:
        """The decoder's work that depends on the image alone (see :class:`DecoderImage`).

        ``image`` (1, dim, h, w): the encoder's features; ``image_pe``: the dense positional
        encoding (1, dim, h, w); ``dense``: the prompt encoder's dense embedding (the "no
        mask" embedding, the same for every prompt, as mask prompts are not offered)."""
        keys = (image + dense[:1]).flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        first = self.transformer.layers[0].image_side(keys, key_pe)
        return DecoderImage(first, key_pe, (image.shape[-2], image.shape[-1]))

    def forward(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (B, M, 4h, 4w) and IoU (B, M): M = 3 when ``multimask``, else 1."""
        return self.decode(self.image_tokens(image, image_pe, dense), sparse, multimask)

    def decode(
        self, image: DecoderImage, sparse: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from :meth:`image_tokens`'s output, kept per image."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(len(sparse), -1, -1), sparse], dim=1)
        hs, src = self.transformer(image.first, image.key_pe, tokens)
        hyper_in = torch.stack(
            [mlp(hs[:, 1 + i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        masks = self.upscaled_masks(src.view(len(src), *image.size, -1), hyper_in)
        iou = self.iou_prediction_head(hs[:, 0, :])
        chosen = slice(1, None) if multimask else slice(0, 1)
        return masks[:, chosen], iou[:, chosen]

    def upscaled_masks(self, src: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """``output_upscaling`` on the image tokens (B, h, w, C), then each mask token's
        weights (B, M, C/8) over the upscaled pixels: mask logits (B, M, 4h, 4w).

        Computed channels-last: each kernel-2 stride-2 transposed convolution is one matrix
        product (:func:`stride2_transposed_conv`), and the layer norm and GELUs act on each
        pixel, so the pixels are put in image order only once, on the M-channel result."""
        up1, norm, gelu1, up2, gelu2 = self.output_upscaling
        x = stride2_transposed_conv(src, up1)  # (B, h, w, 2, 2, C/4)
        x = gelu1(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        x = gelu2(stride2_transposed_conv(x, up2))  # (B, h, w, 2, 2, 2, 2, C/8)
        b, h, w = x.shape[:3]
        masks = x.reshape(b, -1, x.shape[-1]) @ hyper_in.transpose(1, 2)
        # (B, h, w, di, dj, di2, dj2, M): row 4·y + 2·di + di2, column 4·x + 2·dj + dj2.
        masks = masks.view(b, h, w, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, -1, 4 * h, 4 * w)


def stride2_transposed_conv(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """``conv`` (kernel 2, stride 2) on channels-last pixels (…, C) → (…, 2, 2, O).

    The kernels of such a transposed convolution do not overlap: each input pixel becomes
    its own 2×2 output block, ``x · W[:, :, dy, dx] + b``. One matrix product does it; the
    general transposed-convolution kernel took about 15 times as long on a CPU."""
    c, o = conv.weight.shape[:2]
    weight = conv.weight.permute(0, 2, 3, 1).reshape(c, 4 * o)  # (C, dy·dx·O)
    out = (x @ weight).view(*x.shape[:-1], 2, 2, o)
    return out if conv.bias is None else out + conv.bias
