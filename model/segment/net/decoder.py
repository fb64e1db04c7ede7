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

from lama_model.segment.net.tiny_vit import LayerNorm2d, linear_gelu

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

    # The decoder's cross-attentions pair a few prompt tokens (about 7) with thousands of image
    # tokens (4096). Projecting the image tokens costs HW·dim·inner multiply-adds per
    # projection; multiplying the few tokens' side into the weights first, then the image
    # tokens by the result, costs HW·dim·(heads·few) instead, under half for SAM.

    def few_queries(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for few queries ``q`` (B, n, dim) over many keys, without
        projecting the keys ``k`` or values ``v`` (B, HW, dim).

        Per head: q·(k·Wkᵀ + bk)ᵀ = (q·Wk)·kᵀ + q·bk, and the last term, the same for every
        key, leaves the softmax unchanged; softmax(…)·(v·Wvᵀ + bv) = (softmax(…)·v)·Wvᵀ + bv,
        as each row of the softmax sums to 1."""
        b, n, _ = q.shape
        heads, inner = self.num_heads, self.k_proj.out_features
        d = inner // heads
        qh = self.heads(q, self.q_proj) * d**-0.5  # (B, heads, n, d), the scale folded in
        q_in = qh @ self.k_proj.weight.view(heads, d, -1)  # (B, heads, n, dim)
        logits = q_in.reshape(b, heads * n, -1) @ k.transpose(1, 2)
        mixed = logits.softmax(dim=-1) @ v  # (B, heads·n, dim)
        w_v = self.v_proj.weight.view(heads, d, -1).transpose(1, 2)  # (heads, dim, d)
        out = mixed.view(b, heads, n, -1) @ w_v + self.v_proj.bias.view(heads, 1, d)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, inner))

    def few_keys(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`forward` for many queries ``q`` (B, HW, dim) over few keys ``k`` and
        values ``v`` (B, n, dim), without projecting the queries or the heads' outputs;
        plus ``residual`` (B, HW, dim) if given, in the same pass.

        Per head: (q·Wqᵀ + bq)·kₕᵀ = q·(Wqₕᵀ·kₕᵀ) + bqₕ·kₕᵀ: one product over the queries,
        HW·dim·(heads·n), instead of projecting them, HW·dim·inner."""
        b, n, _ = k.shape
        heads, inner = self.num_heads, self.q_proj.out_features
        d = inner // heads
        kh = self.heads(k, self.k_proj) * d**-0.5  # (B, heads, n, d), the scale folded in
        w_q = self.q_proj.weight.view(heads, d, -1)  # (heads, d, dim)
        to_logits = kh @ w_q  # (B, heads, n, dim)
        bias = kh @ self.q_proj.bias.view(heads, d, 1)  # (B, heads, n, 1)
        # Keys first, queries last: a softmax over a last dimension of n (7) ran 12 times
        # slower than over this (heads, n, HW) layout's middle one.
        logits = to_logits.reshape(b, heads * n, -1) @ q.transpose(1, 2)  # (B, heads·n, HW)
        return self.mix_values(logits.view(b, heads, n, -1) + bias, v, residual)

    def projected_queries(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`few_keys` for queries already projected into heads, ``q`` (B, heads, HW, d)
        from :meth:`heads`: for the first block, whose image tokens are the same for every
        prompt, so their projection is kept per image and each prompt costs HW·heads·n·d."""
        b, n, _ = k.shape
        d = q.shape[-1]
        kh = self.heads(k, self.k_proj) * d**-0.5  # (B, heads, n, d)
        return self.mix_values(kh @ q.transpose(2, 3), v, residual)  # (B, heads, n, HW)

    def mix_values(
        self, logits: torch.Tensor, v: torch.Tensor, residual: torch.Tensor | None
    ) -> torch.Tensor:
        """The attention's output (B, HW, dim) for query-last ``logits`` (B, heads, n, HW)
        over the values ``v`` (B, n, dim), plus ``residual`` if given.

        The output projection Σₕ softmax(…)ₕ·vₕ·Woₕᵀ + bo takes vₕ·Woₕᵀ (n, dim) per head:
        one product over the queries, HW·(heads·n)·dim. Each head's softmax sums to 1 over
        its n keys, so adding bo/heads to every row of vₕ·Woₕᵀ adds bo once to each output:
        the bias needs no pass of its own over the (B, HW, dim) output, and the residual is
        the product's accumulator."""
        b, heads, n, _ = logits.shape
        d = self.v_proj.out_features // heads
        weights = logits.softmax(dim=2).view(b, heads * n, -1).transpose(1, 2)  # (B, HW, h·n)
        w_o = self.out_proj.weight.view(-1, heads, d).permute(1, 2, 0)  # (heads, d, dim)
        values = self.heads(v, self.v_proj) @ w_o  # (B, heads, n, dim)
        values = values.reshape(b, heads * n, -1) + self.out_proj.bias / heads
        if residual is None:
            return weights @ values
        return torch.baddbmm(residual, weights, values)


class MLPBlock(nn.Module):
    """``lin1``, ReLU, ``lin2`` (the two-way transformer's feed-forward)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


@dataclass(frozen=True)
class DecoderImage:
    """The mask decoder's inputs that do not depend on the prompt, kept once per image.

    The image tokens entering the first two-way block are the encoder's features plus the
    "no mask" embedding (mask prompts are not offered): the same for every prompt, and so
    are that block's projections of them: the keys and values the prompt tokens attend to,
    and the queries with which they attend to the prompt tokens (10 MiB in all for
    MobileSAM, beside the 4 MiB of features)."""

    keys: torch.Tensor  # (1, HW, dim): the image tokens
    key_pe: torch.Tensor  # (1, HW, dim): their positional encoding
    first_k: torch.Tensor  # (1, heads, HW, d): the first block's token-to-image keys
    first_v: torch.Tensor  # (1, heads, HW, d): and values
    first_q: torch.Tensor  # (1, heads, HW, d): its image-to-token queries
    size: tuple[int, int]  # (h, w): the grid of the image tokens


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

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        first: DecoderImage | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined prompt tokens (B, N, dim) and image tokens (B, HW, dim); ``first``, in the
        first block, holds the projections of ``keys`` kept per image."""
        if self.skip_first_layer_pe:  # the first block's queries are the prompts themselves
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        to_image = self.cross_attn_token_to_image
        to_tokens = self.cross_attn_image_to_token
        if first is None:
            keys_with_pe = keys + key_pe  # both cross-attentions' image side: one pass
            out = to_image.few_queries(queries + query_pe, keys_with_pe, keys)
        else:
            q = to_image.heads(queries + query_pe, to_image.q_proj)
            out = to_image.attend(q, first.first_k, first.first_v)
        queries = self.norm2(queries + out)
        queries = self.norm3(queries + self.mlp(queries))
        if first is None:
            keys = to_tokens.few_keys(keys_with_pe, queries + query_pe, queries, keys)
        else:
            keys = to_tokens.projected_queries(first.first_q, queries + query_pe, queries, keys)
        return queries, self.norm4(keys)


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
        self, image: DecoderImage, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt tokens (B, N, dim) and the image → refined tokens and image tokens."""
        queries, keys, key_pe = tokens, image.keys, image.key_pe
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, tokens, key_pe, image if i == 0 else None)
        final = self.final_attn_token_to_image
        out = final.few_queries(queries + tokens, keys + key_pe, keys)
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
        keys_with_pe = keys + key_pe
        first = self.transformer.layers[0]
        to_image, to_tokens = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        first_k = to_image.heads(keys_with_pe, to_image.k_proj)
        first_v = to_image.heads(keys, to_image.v_proj)
        first_q = to_tokens.heads(keys_with_pe, to_tokens.q_proj)
        size = (image.shape[-2], image.shape[-1])
        return DecoderImage(keys, key_pe, first_k, first_v, first_q, size)

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
        self,
        image: DecoderImage,
        sparse: torch.Tensor,
        multimask: bool,
        best_only: bool = False,
        grid: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from :meth:`image_tokens`'s output, kept per image; ``best_only``:
        only the mask of the highest predicted IoU (B, 1, 4h, 4w), the others not upscaled;
        ``grid`` (rows, columns): only the masks of the image tokens in that top-left part of
        the grid (B, M, 4·rows, 4·columns), e.g. those not in the padding of an image that is
        not square (the upscaling acts on each token alone, so these masks are the same)."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(len(sparse), -1, -1), sparse], dim=1)
        hs, src = self.transformer(image, tokens)
        # Only the masks returned get their weights (each mask token's own MLP): one of four
        # for a box, three for a lone point, the best one for a single prompt ``best_only``.
        masks = range(self.num_mask_tokens)[1:] if multimask else range(1)
        iou = self.iou_prediction_head(hs[:, 0, :])[:, masks.start : masks.stop]
        best = iou.argmax(dim=1, keepdim=True) if best_only else None  # (B, 1)
        if best is not None and len(hs) == 1:
            masks, iou, best = masks[int(best) : int(best) + 1], iou.gather(1, best), None
        mlps = self.output_hypernetworks_mlps
        hyper_in = torch.stack([mlps[i](hs[:, 1 + i, :]) for i in masks], dim=1)
        if best is not None:  # several prompts, each its own best mask
            iou = iou.gather(1, best)
            hyper_in = hyper_in.gather(1, best[..., None].expand(-1, -1, hyper_in.shape[-1]))
        src = src.view(len(src), *image.size, -1)
        if grid is not None:
            src = src[:, : grid[0], : grid[1]]
        return self.upscaled_masks(src, hyper_in), iou

    def upscaled_masks(self, src: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """``output_upscaling`` on the image tokens (B, h, w, C), then each mask token's
        weights (B, M, C/8) over the upscaled pixels: mask logits (B, M, 4h, 4w).

        Computed channels-last: each kernel-2 stride-2 transposed convolution is one matrix
        product (:func:`stride2_transposed_conv`), and the layer norm and GELUs act on each
        pixel, so the pixels are put in image order only once, on the M-channel result."""
        up1, norm, gelu, up2, _ = self.output_upscaling  # the last GELU: fused with up2
        x = stride2_transposed_conv(src, up1)  # (B, h, w, 2, 2, C/4)
        x = gelu(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        x = stride2_transposed_conv(x, up2, gelu=True)  # (B, h, w, 2, 2, 2, 2, C/8)
        b, h, w = x.shape[:3]
        masks = x.reshape(b, -1, x.shape[-1]) @ hyper_in.transpose(1, 2)
        # (B, h, w, di, dj, di2, dj2, M): row 4·y + 2·di + di2, column 4·x + 2·dj + dj2.
        masks = masks.view(b, h, w, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, -1, 4 * h, 4 * w)


def stride2_transposed_conv(
    x: torch.Tensor, conv: nn.ConvTranspose2d, gelu: bool = False
) -> torch.Tensor:
    """``conv`` (kernel 2, stride 2) on channels-last pixels (…, C) → (…, 2, 2, O), followed
    by a GELU if ``gelu``.

    The kernels of such a transposed convolution do not overlap: each input pixel becomes
    its own 2×2 output block, ``x · W[:, :, dy, dx] + b``. One matrix product does it, in
    1/1.4 to 1/2 of the general transposed-convolution kernel's time on a CPU (one thread),
    with the bias (and the GELU, see :func:`linear_gelu`) in the same pass, and the result
    stays channels-last for the next layer norm and product."""
    c, o = conv.weight.shape[:2]
    weight = conv.weight.permute(2, 3, 1, 0).reshape(4 * o, c)  # (dy·dx·O, C)
    bias = None if conv.bias is None else conv.bias.repeat(4)
    out = linear_gelu(x, weight, bias) if gelu else F.linear(x, weight, bias)
    return out.view(*x.shape[:-1], 2, 2, o)
