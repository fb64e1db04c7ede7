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
The decoder stays on torch: its two-way transformer on OpenVINO (float32, the token count
dynamic) ran 1.19 times slower than the torch modules (interleaved, 2 threads, AVX2 EPYC),
and a frozen TorchScript trace of it saved 12 % of its time for a 2.7 s trace per token
count.

Speed (``bench/segment.py``, 2 threads, random weights): see the README's server options
for the figures and bench/segment.py for how to measure. On a 2-core machine shared with
other jobs only ratios within one process mean something: OpenVINO's encoder 1.2 to 1.5
times as fast as torch's; against the code before the decoder's first-block queries, folded
biases and per-mask MLPs, and the encoder's split q, k, v projections, 0.86 to 0.89 of the
decoder's time per prompt and 0.87 to 0.96 of OpenVINO's encoder time. The issue's target:
encoder ≤ 1 s for a 1024² window, decoder ≤ 50 ms per prompt on 2 CPU threads.
"""

from __future__ import annotations

from lama_model.interface import ImageEmbedding

MAX_POINTS = 64  # clicks per prompt; more is a mistake, and each costs decoder time

__all__ = ["MAX_POINTS", "ImageEmbedding"]
