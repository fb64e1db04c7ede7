"""OpenVINO as a served model (``--backend openvino``): float32, bf16 or int8 on the CPU.

The generator is converted from the eager torch model (``openvino.convert_model``, dynamic
height and width; the Fourier units become OpenVINO's RDFT/IRDFT operations) and, for int8,
calibrated (:mod:`lama_model.accel.int8_calibration`). Both take seconds to tens of seconds
for Big LaMa on 2 cores the first time, so the result is kept as IR under the model cache
(:mod:`lama_model.accel.openvino_ir_cache`), keyed by the weights' digest (and for int8 by the
calibration recipe).

The graph keeps a dynamic height and width and is compiled once, at the first request:
OpenVINO's CPU plug-in ran it as fast as a graph compiled for one static shape (Big LaMa,
256², 2 threads: within the noise of a loaded machine), while compiling per shape cost about
half a minute each on that machine, and every new window size in a host would have paid it.

Precisions: ``fp32``; ``bf16`` (OpenVINO's inference-precision hint; only where the CPU has
native bf16, otherwise OpenVINO would silently run float32); ``int8`` (convolutions in int8,
the rest in float32, or in bf16 where native).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lama_model.accel import int8_calibration
from lama_model.accel.int8_calibration import quantize_int8
from lama_model.accel.onnx import CompositeGenerator
from lama_model.accel.openvino_ir_cache import cached_ir, weights_digest
from lama_model.accel.precision import isa_cap_allows_bf16
from lama_model.errors import BackendError, PrecisionError
from lama_model.interface import CompileProgress, PrecisionChoice, ServedModel

log = logging.getLogger(__name__)

OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")
CONVERT_SIZE = 64  # the example input that traces the graph; the graph itself is dynamic
INSTALL_HINT = "pip install 'lama-inpaint[openvino]'"


def require_openvino() -> str:
    """OpenVINO's version, or :class:`BackendError` naming the extra that installs it."""
    try:
        import openvino
    except ImportError:
        raise BackendError(f"the openvino backend needs OpenVINO: {INSTALL_HINT}") from None
    return openvino.__version__


def cpu_has_native_bf16() -> bool:
    """Whether OpenVINO's CPU plug-in runs bf16 natively here (AVX512-BF16 or AMX, and no
    instruction-set cap below them: :func:`~lama_model.accel.precision.isa_cap_allows_bf16`)."""
    import openvino as ov

    if not isa_cap_allows_bf16():
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoModel(nn.Module):
    """An OpenVINO model of the composite generator as a
    :class:`~lama_model.interface.ServedModel` (CPU; no backward pass through it, so a
    refinement runs through the eager float32 generator it was built from)."""

    scripted = False
    choice: PrecisionChoice | None = None
    compiler: CompileProgress | None = None

    def __init__(
        self,
        ov_model: object,
        name: str,
        precision: str,
        generator: nn.Module | None = None,
        size_multiple: int = 8,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        import openvino as ov

        if precision not in OPENVINO_PRECISIONS:
            raise PrecisionError(
                f"the openvino backend runs {', '.join(OPENVINO_PRECISIONS)}, not {precision!r}"
            )
        self.core = ov.Core()
        self.ov_model = ov_model
        self.name = name
        self.precision = precision
        self.size_multiple = size_multiple
        self.threads = threads or torch.get_num_threads()
        self.__dict__["eager"] = generator  # not a submodule: its weights are not ours to save
        self._request: object | None = None  # compiled at the first call
        self._lock = threading.Lock()  # one infer request: one call at a time

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def input_device(self) -> torch.device:
        return self.device

    @property
    def description(self) -> str:
        return f"openvino:{self.precision}"

    @property
    def refine_generator(self) -> nn.Module | None:
        return self.__dict__["eager"]

    @property
    def compiled(self) -> bool:
        """Whether the graph has been compiled (it is, at the first call)."""
        return self._request is not None

    def _infer_request(self) -> object:
        if self._request is None:
            start = time.perf_counter()
            compiled = self.core.compile_model(self.ov_model, "CPU", self._config())
            self._request = compiled.create_infer_request()
            log.info("openvino:%s compiled in %.1f s", self.precision, time.perf_counter() - start)
        return self._request

    def kernels(self) -> set[str]:
        """The CPU plug-in's kernel names in the compiled graph (e.g. ``brgconv_avx2_I8``,
        ``jit_avx2_f32``): which instruction set it really runs; compiles the graph if needed."""
        return {info["primitiveType"] for info in self._runtime_layers() if "primitiveType" in info}

    def layer_precisions(self, layer_type: str = "Convolution") -> set[str]:
        """The data types the compiled graph runs its ``layer_type`` layers in (``{"u8"}`` or
        ``{"i8"}`` when the convolutions are int8, ``{"f32"}`` when not); compiles if needed."""
        return {info["runtimePrecision"] for info in self._runtime_layers()
                if info.get("layerType") == layer_type and "runtimePrecision" in info}  # fmt: skip

    def _runtime_layers(self) -> list[dict[str, str]]:
        request = self._infer_request()
        runtime = request.get_compiled_model().get_runtime_model()  # type: ignore[attr-defined]
        return [{key: str(value.astype(str)) for key, value in op.get_rt_info().items()}
                for op in runtime.get_ordered_ops()]  # fmt: skip

    def _config(self) -> dict[str, object]:
        hint = "bf16" if self.precision == "bf16" or (
            self.precision == "int8" and cpu_has_native_bf16()
        ) else "f32"  # fmt: skip
        return {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
        }

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if image.shape[0] != 1:
            return torch.cat([self(i[None], m[None]) for i, m in zip(image, mask, strict=True)])
        feeds = {
            0: image.detach().float().cpu().contiguous().numpy(),
            1: mask.detach().float().cpu().contiguous().numpy(),
        }
        with self._lock:
            out = np.array(self._infer_request().infer(feeds)[0], copy=True)
        return torch.from_numpy(out)


def convert_generator(generator: nn.Module) -> object:
    """The ``openvino.Model`` of ``(image, mask) → composited image`` with dynamic H, W."""
    import openvino as ov

    module = CompositeGenerator(generator).eval().float().cpu()
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, CONVERT_SIZE, CONVERT_SIZE, generator=gen)
    mask = (torch.rand(1, 1, CONVERT_SIZE, CONVERT_SIZE, generator=gen) > 0.5).float()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and jit deprecation warnings
        # Traced here without the tracer's check: convert_model's own trace re-runs the model
        # to check it, half the conversion time on 2 cores.
        traced = torch.jit.trace(module, (image, mask), check_trace=False)
        model = ov.convert_model(
            traced,
            example_input=(image, mask),
        )
    # Dynamic height and width (fixed per compiled shape later); set here rather than with
    # convert_model's ``input=``, whose preprocessing step took a fifth of the conversion.
    model.reshape({0: ov.PartialShape([1, 3, -1, -1]), 1: ov.PartialShape([1, 1, -1, -1])})
    return model


def ir_path(name: str, digest: str, precision: str, version: str) -> Path:
    """Where the IR of one model, precision and OpenVINO version is cached; an int8 graph's
    name also carries the calibration recipe (:data:`~lama_model.accel.int8_calibration.RECIPE`),
    so a change of recipe never reuses a graph quantized by another."""
    from lama_model.weights.downloads import cache_dir

    # bf16 is a compile hint on the fp32 IR
    graph = f"int8-{int8_calibration.RECIPE.tag}" if precision == "int8" else "fp32"
    safe_version = "".join(c if c.isalnum() or c in ".-" else "_" for c in version)
    return cache_dir() / "openvino" / f"{name}-{digest}-{graph}-ov{safe_version}.xml"


def openvino_model(model: ServedModel, precision: str, cache: bool = True) -> OpenVinoModel:
    """``model``'s eager generator served by OpenVINO in ``precision`` (fp32, bf16, int8).

    The converted (and for int8 quantized) graph is cached as IR unless ``cache`` is False.
    Raises :class:`BackendError` when OpenVINO is missing or the model has no eager
    generator, :class:`PrecisionError` for a precision OpenVINO does not run here.
    """
    version = require_openvino()
    generator = model.refine_generator
    if model.scripted or generator is None:
        raise BackendError(
            "the openvino backend converts the eager generator: load the checkpoint or the "
            "official folder, not a TorchScript file"
        )
    if precision == "bf16" and not cpu_has_native_bf16():
        raise PrecisionError("bf16 on OpenVINO needs a CPU with AVX512-BF16 or AMX")
    generator = generator.float().cpu().eval()
    digest = weights_digest(generator.state_dict())

    def build_fp32() -> object:
        log.info("converting %s to OpenVINO (once: cached under the model cache)", model.name)
        return convert_generator(generator)

    def build() -> object:
        if precision != "int8":
            return build_fp32()
        fp32 = _graph(model.name, digest, "fp32", version, build_fp32, cache)
        log.info("calibrating %s for int8 (once: cached under the model cache)", model.name)
        quantized, seconds = quantize_int8(fp32)
        log.info("int8 calibration of %s took %.1f s", model.name, seconds)
        return quantized

    graph = _graph(model.name, digest, precision, version, build, cache)
    return OpenVinoModel(graph, model.name, precision, generator, int(model.size_multiple))


def _graph(name: str, digest: str, precision: str, version: str, build, cache: bool) -> object:
    if not cache:
        return build()
    graph, reused = cached_ir(ir_path(name, digest, precision, version), build)
    if reused:
        log.info("OpenVINO %s graph of %s read from the cache", precision, name)
    return graph


__all__ = [
    "OPENVINO_PRECISIONS",
    "OpenVinoModel",
    "convert_generator",
    "cpu_has_native_bf16",
    "ir_path",
    "openvino_model",
    "require_openvino",
]
