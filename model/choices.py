"""The choices the commands and the protocol offer, in one torch-free place.

Command lines import this module to build their ``--help`` without loading torch, and the
protocol validates requests against the same tuples the model code accepts.
"""

from __future__ import annotations

STRATEGIES = ("auto", "crop", "resize", "original")  # how a large image meets the generator
PRECISIONS = ("auto", "fp32", "tf32", "fp16", "bf16")  # inference
REFINE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # refinement runs a backward pass: no tf32
TRAIN_PRECISIONS = ("fp32", "bf16")
BACKENDS = ("torch", "onnxruntime")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")

__all__ = [
    "BACKENDS",
    "DEVICE_CHOICES",
    "PRECISIONS",
    "REFINE_PRECISIONS",
    "STRATEGIES",
    "TRAIN_PRECISIONS",
]
