"""MobileSAM as plain modules: :class:`Segmenter` and its builder :func:`build_segmenter`.

Parameter names follow the official code (``image_encoder``, ``prompt_encoder``,
``mask_decoder`` and below) so the official checkpoints load with ``strict=True``.
"""

from lama_model.segment.net.decoder import MaskDecoder, PromptEncoder
from lama_model.segment.net.model import Segmenter, build_segmenter
from lama_model.segment.net.tiny_vit import TinyViT

__all__ = ["MaskDecoder", "PromptEncoder", "Segmenter", "TinyViT", "build_segmenter"]
