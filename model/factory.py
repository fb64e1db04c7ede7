"""Load a model ready to serve: the one place where ``--backend``/``--precision`` are applied.

``lama-inpaint`` and ``lama-server`` both call :func:`load_for_inference`, so the two
commands pick the same inference path for the same flags:

- ``torch`` (default): :func:`lama_model.accel.optimize.optimize` — the fused model; with
  ``precision="auto"`` in float32 or in a reduced precision the device runs natively,
  chosen by measurement (guarded, cached per machine and model);
- ``onnxruntime``: an ``.onnx`` file is served directly; any other model is exported once
  (the ONNX DFT operator carries the Fourier units) into the model cache and reused;
- ``openvino`` (the ``[openvino]`` extra; CPU): the eager generator converted to OpenVINO once
  (cached as IR), in ``fp32``, ``bf16`` (native only) or ``int8`` (min/max int8, calibrated
  at the first start); ``auto`` measures int8 (and bf16) against OpenVINO's float32.

With the torch backend, ``auto`` on a CPU also measures OpenVINO's float32 and int8 when the
extra is installed (:func:`lama_model.accel.optimize.openvino_candidates`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from lama_model.accel.onnx import OnnxRuntimeModel
from lama_model.accel.openvino_runtime import require_openvino
from lama_model.accel.optimize import optimize
from lama_model.choices import BACKENDS
from lama_model.errors import BackendError
from lama_model.interface import ServedModel
from lama_model.weights.checkpoint import load_model
from lama_model.weights.downloads import cache_dir

log = logging.getLogger(__name__)


def load_for_inference(
    source: str | Path,
    device: torch.device,
    precision: str = "auto",
    backend: str = "torch",
    compile: bool = False,
    allow_torchscript: bool = False,
    background: bool = False,
) -> ServedModel:
    """Load ``source`` on ``device`` and wrap it for the fastest path the flags allow.

    The result is a :class:`~lama_model.interface.ServedModel`; its ``description`` names
    the path (e.g. ``fp32+fused``, ``onnxruntime:cpu``). Raises :class:`BackendError` for an
    impossible combination, and
    :class:`~lama_model.weights.checkpoint.CheckpointError` /
    :class:`~lama_model.weights.downloads.WeightsError` as :func:`load_model` does
    (``allow_torchscript`` is passed to it). ``background`` (a server): ``auto`` measures
    OpenVINO's paths in a thread while torch's choice serves
    (:class:`~lama_model.accel.background_choice.BackgroundChoice`).
    """
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    is_onnx = Path(source).suffix.lower() == ".onnx"
    if is_onnx and backend == "torch":
        raise BackendError(f"{source} is an ONNX file: use --backend onnxruntime")
    if backend == "openvino":
        _check_openvino(source, device, compile, is_onnx)
    if backend == "onnxruntime":
        if precision not in ("auto", "fp32") or compile:
            raise BackendError("the onnxruntime backend runs float32 only, without --compile")
        _require_onnxruntime()
        if is_onnx:
            if not Path(source).is_file():
                raise BackendError(f"{source}: no such file")
            return OnnxRuntimeModel(source, providers=_providers(device))
        model = load_model(source, "cpu", allow_torchscript=allow_torchscript)
        onnx_file = onnx_cache_path(source, model.name)
        if not onnx_file.is_file():
            log.info("exporting %s to ONNX (once) at %s", model.name, onnx_file)
        return optimize(model, device, backend="onnxruntime", onnx_path=onnx_file)
    model = load_model(source, device, allow_torchscript=allow_torchscript)
    if device.type == "cuda" and compile and precision in ("auto", "bf16", "fp16"):
        # Compiled in the background per size bucket, served eagerly meanwhile (issue 14).
        # Without compiling, optimize()'s autocast path was as fast on an H200 at 1024² and
        # 7 % faster at 2048² (bench/gpu_e2e.py), so it stays the default.
        from lama_model.accel.gpu_model import gpu_model

        chosen = gpu_model(model, precision, compile)
        if chosen is not None:
            return chosen
    return optimize(
        model, device, precision=precision, compile=compile, backend=backend, background=background
    )


def onnx_cache_path(source: str | Path, name: str) -> Path:
    """Where the ONNX export of ``source`` is kept: keyed by its path, size and time."""
    path = Path(source).expanduser()
    key = str(source)
    if path.exists():
        main = path / "models" / "best.ckpt" if path.is_dir() else path
        stat = (main if main.exists() else path).stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "onnx" / f"{name}-{digest}.onnx"


def _check_openvino(source: str | Path, device: torch.device, compile: bool, is_onnx: bool) -> None:
    """Raise :class:`BackendError` when the openvino backend cannot serve ``source`` here."""
    if compile or device.type != "cpu":
        raise BackendError("the openvino backend runs on the CPU (--device cpu), without --compile")
    if is_onnx:
        raise BackendError(f"{source}: the openvino backend converts a checkpoint, not an .onnx")
    require_openvino()


def _providers(device: torch.device) -> list[str]:
    return (["CUDAExecutionProvider"] if device.type == "cuda" else []) + ["CPUExecutionProvider"]


def _require_onnxruntime() -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise BackendError(
            "the onnxruntime backend needs ONNX Runtime: pip install 'lama-inpaint[onnxruntime]'"
            " (or onnxruntime-gpu for CUDA)"
        ) from None


__all__ = ["BackendError", "load_for_inference", "onnx_cache_path"]
