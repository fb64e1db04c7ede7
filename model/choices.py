"""The choices the commands and the protocol offer, in one torch-free place.

Command lines import this module to build their ``--help`` without loading torch, and the
protocol validates requests against the same tuples the model code accepts.
"""

from __future__ import annotations

STRATEGIES = ("auto", "crop", "resize", "original")  # how a large image meets the generator
# inference; int8 runs on the openvino backend only (convolutions in int8, FFTs in float32)
PRECISIONS = ("auto", "fp32", "tf32", "fp16", "bf16", "int8")
REFINE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # refinement runs a backward pass: no tf32
TRAIN_PRECISIONS = ("fp32", "bf16")
BACKENDS = ("torch", "onnxruntime", "openvino")  # openvino: the optional [openvino] extra
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# lama-train fit: architectures and the perceptual loss's encoder by name; the configurations
# they name are lama_model.train.config's presets.
TRAIN_GENERATORS = ("big-lama", "lama-fourier", "small", "tiny")
TRAIN_DISCRIMINATORS = ("big", "small", "tiny")
# resnet50dilated is the paper's ADE20k encoder; tiny-random-for-tests is a small random-weight
# stand-in that keeps the test suite fast (not a perceptual loss).
PERCEPTUAL_ENCODERS = ("resnet50dilated", "tiny-random-for-tests")
# Known segmenters (select an object from a box or clicks); their weights are
# lama_model.weights.downloads entries of kind "segmenter".
SEGMENTERS = ("mobile-sam",)
# lama-inpaint / lama-server --checkpoint: a lama-train run folder's own checkpoints by name.
RUN_CHECKPOINTS = ("best", "last")
CHECKPOINT_HELP = (
    "with --model RUN_FOLDER (lama-train fit --out): best (models/best.ckpt, chosen by the "
    "official ssim_fid100_f1 monitor; an error if no validation has run yet), last (the newest "
    "weights) or the path of a .ckpt file. Without it a run folder serves best, else last"
)

__all__ = [
    "BACKENDS",
    "CHECKPOINT_HELP",
    "DEVICE_CHOICES",
    "PERCEPTUAL_ENCODERS",
    "PRECISIONS",
    "REFINE_PRECISIONS",
    "RUN_CHECKPOINTS",
    "SEGMENTERS",
    "STRATEGIES",
    "TRAIN_DISCRIMINATORS",
    "TRAIN_GENERATORS",
    "TRAIN_PRECISIONS",
]
