"""Choosing the torch device a user asked for, with a clear error when it is not there."""

from __future__ import annotations

import torch
from torch import nn

from lama_model.choices import DEVICE_CHOICES
from lama_model.errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA if available, else Apple MPS, else CPU; others are checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "CUDA was requested but this PyTorch has no usable CUDA device "
            f"(torch {torch.__version__}); install a CUDA build of PyTorch or use --device cpu"
        )
    if base == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise DeviceError("MPS was requested but is not available; use --device cpu")
    if base not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {name!r}; choose from {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (the CPU for a module without any)."""
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def resolve_devices(spec: str = "auto") -> list[torch.device]:
    """Devices for several workers: ``cuda:0,cuda:1``, ``cuda:all``, ``cpu,cpu`` or one name.

    ``cuda:all`` is every visible CUDA device. A device may be named twice (two workers on
    one GPU overlap one request's host work with another's GPU work).
    """
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise DeviceError("no device given")
    devices: list[torch.device] = []
    for name in names:
        if name == "cuda:all":
            resolve_device("cuda")  # the clear error when there is no CUDA
            devices.extend(torch.device("cuda", i) for i in range(torch.cuda.device_count()))
            continue
        device = resolve_device(name)
        if device.type == "cuda" and device.index is not None:
            if device.index >= torch.cuda.device_count():
                raise DeviceError(
                    f"{name}: there are only {torch.cuda.device_count()} CUDA device(s)"
                )
        devices.append(device)
    return devices
