"""Select an object from a box or clicks: MobileSAM (Segment Anything with a TinyViT encoder).

``lama_model.load_segmenter()`` returns a :class:`~lama_model.interface.ServedSegmenter`;
``embed`` encodes an image once (the slow part), ``predict`` turns each prompt into a mask.

Why MobileSAM: among the CPU-friendly Segment Anything models (MobileSAM, EfficientViT-SAM
L0, EfficientSAM-Ti, SAM 2.1 tiny) it has the smallest image encoder (TinyViT-5M) in front
of SAM's own prompt encoder and mask decoder, so its masks follow SAM's; the measured times
are in ``bench/segment.py``'s docstring.
"""

from __future__ import annotations

from lama_model.interface import ImageEmbedding

MAX_POINTS = 64  # clicks per prompt; more is a mistake, and each costs decoder time

__all__ = ["MAX_POINTS", "ImageEmbedding"]
