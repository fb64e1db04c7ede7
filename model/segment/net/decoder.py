"""SAM's prompt encoder, two-way transformer and mask decoder as plain modules.

Written from the official ``segment_anything/modeling`` (prompt_encoder.py, transformer.py,
mask_decoder.py), with its parameter names so official checkpoints load strictly.
"""

from __future__ import annotations

import math

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
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = dense.expand(batch, -1, *self.image_embedding_size)
        return sparse, dense


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

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(self.q_proj(q)), self.heads(self.k_proj(k)), self.heads(self.v_proj(v))
        attn = (q @ k.transpose(2, 3) / math.sqrt(q.shape[-1])).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class MLPBlock(nn.Module):
    """``lin1``, ReLU, ``lin2`` (the two-way transformer's feed-forward)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:  # the first block's queries are the prompts themselves
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


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
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
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

    def forward(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (B, M, 4h, 4w) and IoU (B, M): M = 3 when ``multimask``, else 1."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(len(sparse), -1, -1), sparse], dim=1)
        src = torch.repeat_interleave(image, len(tokens), dim=0) + dense
        pos = torch.repeat_interleave(image_pe, len(tokens), dim=0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        mask_tokens = hs[:, 1 : 1 + self.num_mask_tokens, :]
        upscaled = self.output_upscaling(src.transpose(1, 2).view(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        iou = self.iou_prediction_head(hs[:, 0, :])
        chosen = slice(1, None) if multimask else slice(0, 1)
        return masks[:, chosen], iou[:, chosen]
