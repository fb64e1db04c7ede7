"""Select an object from a box or clicks: MobileSAM (Segment Anything with a TinyViT encoder).

``lama_model.load_segmenter()`` returns a :class:`~lama_model.interface.ServedSegmenter`;
``embed`` encodes an image once (the slow part), ``predict`` turns each prompt into a mask.

Why MobileSAM: among the CPU-friendly Segment Anything models (MobileSAM, EfficientViT-SAM
L0, EfficientSAM-Ti, SAM 2.1 tiny) it has the smallest image encoder (TinyViT-5M) in front
of SAM's own prompt encoder and mask decoder, so its masks follow SAM's. The other three
were not timed here (no time left in the session that wrote this); the choice rests on their
published CPU figures and MobileSAM's reuse of SAM's decoder.

Measured (``python bench/segment.py``, random weights, ``torch.set_num_threads(2)``) on a
2-core machine shared with four other jobs (load average 5 to 7), so only an upper bound:
encoder 4 to 17 s at 1024², decoder 1.3 to 2 s per prompt, where the machine's own
contention slowed plain tensor additions tenfold. The issue's target (encoder ≤ 1 s, decoder
≤ 50 ms on 2 threads) is still to be checked on a quiet machine.
"""

from __future__ import annotations

from lama_model.interface import ImageEmbedding

MAX_POINTS = 64  # clicks per prompt; more is a mistake, and each costs decoder time

__all__ = ["MAX_POINTS", "ImageEmbedding"]
