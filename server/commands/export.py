"""``lama-inpaint export``: write a LaMa model as an ONNX or TorchScript file.

    lama-inpaint export --format onnx|torchscript MODEL -o FILE [--opset 18] [--size 256]
    lama-inpaint export MODEL -o FILE.onnx --dft matmul --size 512|HxW [--overwrite]

The export itself lives in :mod:`lama_model.accel.onnx`; this is its command line. ONNX export
needs ``onnx`` and ``onnxscript``, which only this command uses, so they are the ``export``
extra (``pip install "lama-inpaint[export]"``), not dependencies of every install.

``--dft matmul`` writes the Fourier transforms as matrix products for one fixed size (``--size``,
default 512), for runtimes without an ONNX ``DFT`` operator (OpenVINO). An existing output file
is kept unless ``--overwrite`` is given; the file is written beside and renamed into place, so an
interrupted export never leaves half a file under the name asked for.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from lama_server.commands import exit_codes

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = exit_codes.OK, exit_codes.FAILED, exit_codes.USAGE
EXPORT_EXTRA = "export"
ONNX_MODULES = ("onnx", "onnxscript")
DFT_CHOICES = ("operator", "matmul")  # lama_model.accel.onnx.DFT_CHOICES (that imports torch)
TRACE_SIDE, MATMUL_SIDE = 256, 512  # default --size: a tracing sample; a matmul export's size


def size_argument(text: str) -> tuple[int, int]:
    """``--size``: ``N`` (square) or ``HxW``, each a multiple of 8 and >= 16."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        height, width = (int(parts[0]),) * 2 if len(parts) == 1 else map(int, parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or HxW") from None
    if height % 8 or width % 8 or min(height, width) < 16:
        raise argparse.ArgumentTypeError(f"{text!r}: sides must be multiples of 8, >= 16")
    return height, width


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``lama-inpaint export``."""
    parser = argparse.ArgumentParser(
        prog="lama-inpaint export",
        description="Export a LaMa model to ONNX or TorchScript: (image, mask) -> image.",
    )
    parser.add_argument("model", help="model folder, .ckpt, state_dict .pth or known name")
    parser.add_argument("-o", "--output", required=True, type=Path, help="file to write")
    parser.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        default=None,
        help="default: from the output suffix (.onnx → onnx, else torchscript)",
    )
    # None: lama_model.accel.onnx.DEFAULT_OPSET (not read here: that module imports torch).
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (>= 17; default 18)")
    parser.add_argument(
        "--dft",
        choices=DFT_CHOICES,
        default="operator",
        help="ONNX Fourier transforms: 'operator' (ONNX DFT op, any size; ONNX Runtime) or "
        "'matmul' (matrix products for one fixed --size; also OpenVINO and other runtimes "
        "without a DFT op)",
    )
    parser.add_argument(
        "--size",
        type=size_argument,
        default=None,
        help=f"N or HxW, multiples of 8: the size of a --dft matmul export (default "
        f"{MATMUL_SIDE}); otherwise the tracing sample (default {TRACE_SIDE})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--verbose", action="store_true")
    return parser


def missing_onnx_modules() -> list[str]:
    """The modules ONNX export needs that are not installed."""
    return [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """``lama-inpaint export``: returns a process exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    fmt = args.format or ("onnx" if args.output.suffix.lower() == ".onnx" else "torchscript")
    problem = usage_problem(args, fmt)
    if problem:
        print(f"lama-inpaint export: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    missing = missing_onnx_modules() if fmt == "onnx" else []
    if missing:  # before loading the model, in one line
        print(f"lama-inpaint export: ONNX export needs {' and '.join(missing)}: "
              f"pip install \"lama-inpaint[{EXPORT_EXTRA}]\"", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    from lama_model.weights.checkpoint import CheckpointError

    try:
        out = export_to(args, fmt)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"lama-inpaint export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    described = f"{fmt} ({args.dft} DFT)" if fmt == "onnx" else fmt
    print(f"wrote {described} model to {out}")
    return EXIT_OK


def usage_problem(args: argparse.Namespace, fmt: str) -> str | None:
    """Why these arguments cannot be exported, in one line; None when they can."""
    if args.dft == "matmul" and fmt != "onnx":
        return "--dft matmul is an ONNX option (give --format onnx or a .onnx output)"
    if args.output.exists() and not args.overwrite:
        return f"{args.output} exists; give --overwrite to replace it"
    if args.output.is_dir():
        return f"{args.output} is a folder, not a file"
    return None


def export_to(args: argparse.Namespace, fmt: str) -> Path:
    """Load the model and export it to ``args.output`` (written beside, then renamed)."""
    from lama_model.accel.onnx import export_onnx, export_torchscript
    from lama_model.weights.checkpoint import load_model

    default_side = MATMUL_SIDE if args.dft == "matmul" else TRACE_SIDE
    size = args.size or (default_side, default_side)
    from lama_server.commands.image_files import replace_through_temporary

    model = load_model(args.model)

    def write(partial: Path) -> None:
        if fmt == "onnx":
            opset = {} if args.opset is None else {"opset": args.opset}
            export_onnx(model, partial, sample_size=size, verbose=args.verbose, dft=args.dft,
                        **opset)  # fmt: skip
        else:
            export_torchscript(model, partial, sample_size=size)
        if args.output.exists() and not args.overwrite:  # made while we exported
            raise FileExistsError(f"{args.output} appeared during the export; kept it")

    replace_through_temporary(args.output, write)
    return args.output


if __name__ == "__main__":  # pragma: no cover - manual use
    sys.exit(main())
