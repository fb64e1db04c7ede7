"""Export a LaMa model to ONNX (dynamic size, Fourier transforms as ONNX ``DFT``) or TorchScript,
and serve an ONNX file with ONNX Runtime (:class:`OnnxRuntimeModel`).

Both exports take ``(image[1,3,H,W] float 0..1, mask[1,1,H,W] 0/1)`` and return the composited
image ``mask · fill + (1 − mask) · image``, the format of the official ``bin/to_jit.py`` (and so of
the ``big-lama.pt`` other tools distribute). H and W must be multiples of 8.

Its command line is ``lama-inpaint export`` (:mod:`lama_server.commands.export`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from lama_model.devices import module_device
from lama_model.interface import CompileProgress, PrecisionChoice, ServedModel
from lama_model.net.generator import FFCResNetGenerator

DEFAULT_OPSET = 18  # DFT exists from 17; 18 is what torch.onnx's dynamo exporter targets best
MIN_OPSET = 17
MAX_SIDE = 8192


class CompositeGenerator(nn.Module):
    """``(image, mask) → mask · generator(masked image, mask) + (1 − mask) · image``."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        fill = self.generator(torch.cat([image * (1 - mask), mask], dim=1))
        return mask * fill + (1 - mask) * image


def exportable(model: ServedModel | FFCResNetGenerator) -> tuple[nn.Module, int]:
    """The eager module to export and its size multiple.

    Accepts a :class:`~lama_model.interface.ServedModel` with an eager generator (a
    :class:`~lama_model.weights.checkpoint.LamaModel`, the optimized model...) or a bare
    ``FFCResNetGenerator``.
    """
    if isinstance(model, FFCResNetGenerator):
        return CompositeGenerator(model).eval(), model.size_multiple
    if model.scripted:
        raise ValueError(
            "this model is a TorchScript file; export needs the eager model "
            "(an official folder, a .ckpt or a state_dict)"
        )
    generator = model.refine_generator
    if not isinstance(generator, FFCResNetGenerator):
        raise ValueError(f"cannot export {type(model).__name__}: no LaMa generator inside")
    return CompositeGenerator(generator).eval(), int(model.size_multiple)


def _sample(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen)
    mask = (torch.rand(1, 1, size, size, generator=gen) > 0.5).float()
    return image.to(device), mask.to(device)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    sample_size: int = 64,
    verbose: bool = False,
) -> Path:
    """Write an ONNX model with dynamic height and width (multiples of the size multiple).

    The Fourier units export through the ONNX ``DFT`` operator (torch's dynamo-based exporter
    maps ``rfftn``/``irfftn`` to it), so the graph needs opset >= 17. The batch size is 1.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (the DFT operator), not {opset}")
    module, multiple = exportable(model)
    module = module.float()
    device = module_device(module)
    image, mask = _sample(max(sample_size, 2 * multiple), device)
    # Dims are expressed as multiple · k so the exporter knows H, W stay divisible.
    k_h = torch.export.Dim("h_blocks", min=2, max=MAX_SIDE // multiple)
    k_w = torch.export.Dim("w_blocks", min=2, max=MAX_SIDE // multiple)
    spatial = {2: multiple * k_h, 3: multiple * k_w}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = io.StringIO()
    # The exporter prints progress lines and warnings; keep them unless asked.
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(sink)
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    try:
        with quiet, warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")
                onnx_logger.setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
            torch.onnx.export(
                module,
                (image, mask),
                str(path),
                dynamo=True,
                opset_version=opset,
                input_names=["image", "mask"],
                output_names=["output"],
                dynamic_shapes={"image": spatial, "mask": spatial},
                external_data=False,
                verbose=verbose,
            )
    finally:
        onnx_logger.setLevel(level)
    return path


def export_torchscript(model: nn.Module, path: str | Path, sample_size: int = 256) -> Path:
    """Trace to TorchScript the way the official ``bin/to_jit.py`` does.

    The traced graph keeps the sizes symbolic (shapes are read with ``aten::size``), so the
    file runs at any multiple of 8 and loads back through
    :func:`lama_model.weights.checkpoint.load_model`.
    """
    module, multiple = exportable(model)
    module = module.float()
    image, mask = _sample(max(sample_size, 2 * multiple), module_device(module))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates jit.trace
        traced = torch.jit.trace(module, (image, mask), check_trace=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


class OnnxRuntimeModel(nn.Module):
    """ONNX Runtime session as a :class:`~lama_model.interface.ServedModel` (file from
    :func:`export_onnx`): float32, no refinement (no backward pass through a session)."""

    precision = "fp32"
    scripted = False
    choice: PrecisionChoice | None = None
    compiler: CompileProgress | None = None
    refine_generator: nn.Module | None = None

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        providers: list[str] | None = None,
        threads: int | None = None,
        size_multiple: int = 8,
    ) -> None:
        super().__init__()
        import onnxruntime as ort  # optional dependency: only this backend needs it

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=chosen)
        self.providers = self.session.get_providers()
        self.name = name or Path(path).stem
        self.size_multiple = size_multiple

    @property
    def device(self) -> torch.device:
        # Inputs are handed over as NumPy arrays; ORT moves them itself.
        return torch.device("cpu")

    @property
    def input_device(self) -> torch.device:
        return self.device

    @property
    def description(self) -> str:
        return "onnxruntime:" + self.providers[0].replace("ExecutionProvider", "").lower()

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        feeds = {
            "image": image.detach().float().cpu().contiguous().numpy(),
            "mask": mask.detach().float().cpu().contiguous().numpy(),
        }
        (out,) = self.session.run(["output"], feeds)
        return torch.from_numpy(out).to(image.device)



def onnx_runtime_model(
    model: ServedModel, device: torch.device, onnx_path: str | Path | None
) -> OnnxRuntimeModel:
    """``model`` exported to ``onnx_path`` (once; a temporary file when None) and served by
    ONNX Runtime on ``device``."""
    if onnx_path is None or not Path(onnx_path).is_file():
        if onnx_path is None:
            import tempfile

            onnx_path = Path(tempfile.mkdtemp(prefix="lama-onnx-")) / "model.onnx"
        onnx_path = Path(onnx_path)
        # Written beside and renamed: an interrupted export never leaves a broken file.
        partial = onnx_path.with_name(onnx_path.name + ".partial")
        export_onnx(model.cpu(), partial)
        partial.replace(onnx_path)
        model.to(device)
    providers = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    return OnnxRuntimeModel(
        onnx_path,
        name=model.name,
        providers=providers + ["CPUExecutionProvider"],
        size_multiple=int(model.size_multiple),
    )
