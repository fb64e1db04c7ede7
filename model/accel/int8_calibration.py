"""int8 post-training quantization of an OpenVINO model with NNCF, calibrated on the loaded
weights with synthetic photo-like inputs.

NNCF inserts int8 quantize/dequantize pairs around the convolutions (per-channel weights,
per-tensor activations whose ranges the calibration inputs set); the Fourier transforms are
not quantizable operations and stay float32. Calibrating on the loaded weights (not on a
reference model) matters: the activation ranges are the checkpoint's own.

Synthetic inputs are enough for ranges: a smooth random field plus noise spans the dynamic
range of photos, and the hole (a box, as users paint) exercises the mask channel.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

CALIBRATION_SIZE = 256  # the activations' ranges do not depend on the size; 256² keeps it quick
CALIBRATION_INPUTS = 4  # 4 gave 51 dB on Big LaMa in issue 20's survey; more costs start-up


def calibration_inputs(
    count: int = CALIBRATION_INPUTS, size: int = CALIBRATION_SIZE
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` seeded (image[1,3,size,size], mask[1,1,size,size]) float32 pairs."""
    inputs = []
    for seed in range(count):
        gen = torch.Generator().manual_seed(1000 + seed)
        low = torch.rand(1, 3, size // 32, size // 32, generator=gen)
        image = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        image = (image + 0.05 * torch.randn(1, 3, size, size, generator=gen)).clamp(0, 1)
        mask = torch.zeros(1, 1, size, size)
        side = size // 3
        y, x = torch.randint(0, size - side, (2,), generator=gen).tolist()
        mask[..., y : y + side, x : x + side] = 1
        inputs.append((image.numpy(), mask.numpy()))
    return inputs


def quantize_int8(model: object, count: int | None = None) -> tuple[object, float]:
    """``model`` (an ``openvino.Model`` of the composite generator) with int8 convolutions,
    and the seconds calibration took; ``count`` inputs (default :data:`CALIBRATION_INPUTS`).
    Needs NNCF (the ``openvino`` extra)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    start = time.perf_counter()
    inputs = calibration_inputs(CALIBRATION_INPUTS if count is None else count)
    dataset = nncf.Dataset(inputs, lambda pair: {0: pair[0], 1: pair[1]})
    # No bias correction: on Big LaMa (seeded weights) it gave the same 53.4 dB on the hole as
    # without, and cost 78 per-layer compiles and runs (a fifth to a third of calibration).
    quantized = nncf.quantize(
        model, dataset, subset_size=len(inputs),
        advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True),
    )  # fmt: skip
    return quantized, time.perf_counter() - start


__all__ = ["CALIBRATION_INPUTS", "CALIBRATION_SIZE", "calibration_inputs", "quantize_int8"]
