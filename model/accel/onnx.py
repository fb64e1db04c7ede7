"""Export a LaMa model to ONNX or TorchScript, and serve an ONNX file with ONNX Runtime
(:class:`OnnxRuntimeModel`).

ONNX export writes the Fourier units one of two ways (``dft``):

- ``"operator"``: the ONNX ``DFT`` operator (opset >= 17); any height and width (multiples of 8).
  ONNX Runtime runs it; OpenVINO's ONNX reader does not.
- ``"matmul"``: real matrix products with constant DFT matrices
  (:mod:`lama_model.accel.matmul_dft`) for one fixed ``H×W``, the size of the sample. No ``DFT``
  operator in the graph, so runtimes without one (OpenVINO) run it too.

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
from torch.nn import functional as F

from lama_model.accel.matmul_dft import with_matmul_dft
from lama_model.devices import module_device
from lama_model.interface import CompileProgress, PrecisionChoice, ServedModel
from lama_model.net.generator import FFCResNetGenerator

DEFAULT_OPSET = 18  # DFT exists from 17; 18 is what torch.onnx's dynamo exporter targets best
MIN_OPSET = 17
MAX_SIDE = 8192
DFT_OPERATOR, DFT_MATMUL = "operator", "matmul"
DFT_CHOICES = (DFT_OPERATOR, DFT_MATMUL)


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


def _sample(size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, *size, generator=gen)
    mask = (torch.rand(1, 1, *size, generator=gen) > 0.5).float()
    return image.to(device), mask.to(device)


def _sample_size(size: int | tuple[int, int], multiple: int, dft: str) -> tuple[int, int]:
    """``(H, W)`` of the tracing sample: the export's fixed size for ``dft="matmul"``."""
    height, width = (size, size) if isinstance(size, int) else size
    if dft == DFT_OPERATOR:  # only traces: any size the model takes will do
        return max(height, 2 * multiple), max(width, 2 * multiple)
    if dft != DFT_MATMUL:
        raise ValueError(f"dft must be one of {', '.join(DFT_CHOICES)}, not {dft!r}")
    if min(height, width) < 2 * multiple or height % multiple or width % multiple:
        raise ValueError(
            f"a matmul-DFT export is for one size: {height}×{width} must be multiples of "
            f"{multiple}, at least {2 * multiple}"
        )
    if max(height, width) > MAX_SIDE:
        raise ValueError(f"a matmul-DFT export takes sides up to {MAX_SIDE}, not {height}×{width}")
    return height, width


def export_onnx(
    model: nn.Module,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    sample_size: int | tuple[int, int] = 64,
    verbose: bool = False,
    dft: str = DFT_OPERATOR,
) -> Path:
    """Write an ONNX model of ``(image, mask) → image``; batch size 1.

    ``dft="operator"``: dynamic height and width (multiples of the size multiple); the Fourier
    units export through the ONNX ``DFT`` operator (torch's dynamo exporter maps
    ``rfftn``/``irfftn`` to it). ``dft="matmul"``: the graph takes exactly ``sample_size``
    (``N`` or ``(H, W)``) and holds the transforms as matrix products, no ``DFT`` operator.
    Either way the graph needs opset >= 17 (what the exporter is checked with).
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (the DFT operator), not {opset}")
    module, multiple = exportable(model)
    module = module.float()
    size = _sample_size(sample_size, multiple, dft)
    image, mask = _sample(size, module_device(module))
    dynamic_shapes = None
    if dft == DFT_MATMUL:
        module = with_matmul_dft(module, image, mask)
    else:
        # Dims are expressed as multiple · k so the exporter knows H, W stay divisible.
        k_h = torch.export.Dim("h_blocks", min=2, max=MAX_SIDE // multiple)
        k_w = torch.export.Dim("w_blocks", min=2, max=MAX_SIDE // multiple)
        spatial = {2: multiple * k_h, 3: multiple * k_w}
        dynamic_shapes = {"image": spatial, "mask": spatial}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _export_quietly(module, (image, mask), path, opset, dynamic_shapes, verbose)
    return path


def _export_quietly(
    module: nn.Module,
    inputs: tuple[torch.Tensor, torch.Tensor],
    path: Path,
    opset: int,
    dynamic_shapes: dict | None,
    verbose: bool,
) -> None:
    """``torch.onnx.export`` (dynamo) without its progress lines and warnings unless asked."""
    sink = io.StringIO()
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
                inputs,
                str(path),
                dynamo=True,
                opset_version=opset,
                input_names=["image", "mask"],
                output_names=["output"],
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=verbose,
            )
    finally:
        onnx_logger.setLevel(level)


def export_torchscript(
    model: nn.Module, path: str | Path, sample_size: int | tuple[int, int] = 256
) -> Path:
    """Trace to TorchScript the way the official ``bin/to_jit.py`` does.

    The traced graph keeps the sizes symbolic (shapes are read with ``aten::size``), so the
    file runs at any multiple of 8 and loads back through
    :func:`lama_model.weights.checkpoint.load_model`.
    """
    module, multiple = exportable(model)
    module = module.float()
    image, mask = _sample(_sample_size(sample_size, multiple, DFT_OPERATOR), module_device(module))
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
    :func:`export_onnx`): float32, no refinement (no backward pass through a session).

    A fixed-size file (``dft="matmul"``) takes smaller inputs too: they are padded at the
    bottom and right to its size (edge pixels repeated, marked known) and the result cropped;
    larger ones raise ``ValueError``.
    """

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
        self.fixed_size = fixed_input_size(self.session)

    @property
    def device(self) -> torch.device:
        # Inputs are handed over as NumPy arrays; ORT moves them itself.
        return torch.device("cpu")

    @property
    def input_device(self) -> torch.device:
        return self.device

    @property
    def description(self) -> str:
        path = "onnxruntime:" + self.providers[0].replace("ExecutionProvider", "").lower()
        if self.fixed_size is not None:
            path += " ({}×{} fixed)".format(*self.fixed_size)
        return path

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        image, mask = pad_to_fixed_size(image, mask, self.fixed_size)
        feeds = {
            "image": image.detach().float().cpu().contiguous().numpy(),
            "mask": mask.detach().float().cpu().contiguous().numpy(),
        }
        (out,) = self.session.run(["output"], feeds)
        return torch.from_numpy(out[..., :height, :width]).to(image.device)


def fixed_input_size(session: object) -> tuple[int, int] | None:
    """``(H, W)`` an ONNX Runtime session's ``image`` input is fixed to, None when dynamic."""
    shapes = [i.shape for i in session.get_inputs() if i.name == "image"]
    if not shapes or len(shapes[0]) != 4:
        return None  # not one of our exports: ONNX Runtime will say what it lacks
    height, width = shapes[0][-2:]
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def pad_to_fixed_size(
    image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``image`` (edge repeated) and ``mask`` (zeros: known) at the bottom/right to ``size``.

    Raises ``ValueError`` in one line when the input is larger than ``size``.
    """
    height, width = image.shape[-2:]
    if size is None or (height, width) == size:
        return image, mask
    if height > size[0] or width > size[1]:
        raise ValueError(
            f"this ONNX file is a fixed-size export for up to {size[0]}×{size[1]} pixels, "
            f"got {height}×{width}: export one with a larger --size"
        )
    pad = (0, size[1] - width, 0, size[0] - height)
    return F.pad(image, pad, mode="replicate"), F.pad(mask, pad)


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
