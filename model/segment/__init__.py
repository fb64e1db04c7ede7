"""Select an object from a box or clicks: MobileSAM (Segment Anything with a TinyViT encoder).

``lama_model.load_segmenter()`` returns a :class:`~lama_model.interface.ServedSegmenter`;
``embed`` encodes an image once (the slow part), ``predict`` turns each prompt into a mask.

Why MobileSAM: among the CPU-friendly Segment Anything models (MobileSAM, EfficientViT-SAM
L0, EfficientSAM-Ti, SAM 2.1 tiny) it has the smallest image encoder (TinyViT-5M) in front
of SAM's own prompt encoder and mask decoder, so its masks follow SAM's. The other three
were not timed here (no time left in the session that wrote this); the choice rests on their
published CPU figures and MobileSAM's reuse of SAM's decoder.

What inference does beyond the official code (each held to the plain modules by
tests/test_segment_inference.py, and to the official outputs by the golden tests): batch
norms folded into the convolutions, the encoder channels-last with each convolution or
feed-forward layer and its GELU fused into one oneDNN operator on a CPU, its first stage run
in bands of rows that stay in the cache; the decoder's prompt-independent work (the image
tokens and the first block's keys, values and image-to-token queries) kept with the
embedding, its cross-attentions multiplying the few prompt tokens into the weights instead of
projecting 4096 image tokens (the output bias and the residual inside the last product), its
upscaling as plain matrix products and only for the image tokens outside the padding.
Where the ``openvino`` extra is installed the image encoder runs on OpenVINO in float32
(:mod:`lama_model.segment.encoder_runtime`; ``info`` and the description say which runs).

Speed (``bench/segment.py``, 2 threads, random weights) could only be measured on a 2-core
machine shared with other jobs (load average 5 to 11), where only ratios within one process
mean something: OpenVINO's encoder 1.02 to 1.34 times as fast as torch's (about 1.18 in
most runs), the decoder 1.10 times as fast as before the grid crop (see the README's server
options for the figures and bench/segment.py for how to measure on a quiet machine). The
issue's target: encoder ≤ 1 s for a 1024² window, decoder ≤ 50 ms per prompt on 2 CPU
threads.
"""

from __future__ import annotations

from lama_model.interface import ImageEmbedding

MAX_POINTS = 64  # clicks per prompt; more is a mistake, and each costs decoder time

__all__ = ["MAX_POINTS", "ImageEmbedding"]
