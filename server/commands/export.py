"""``lama-inpaint export``: write a LaMa model as an ONNX or TorchScript file.

    lama-inpaint export --format onnx|torchscript MODEL -o FILE [--opset 18] [--size 256]

The export itself lives in :mod:`lama_model.accel.onnx`; this is its command line. ONNX export
needs ``onnx`` and ``onnxscript``, which only this command uses, so they are the ``export``
extra (``pip install "lama-inpaint[export]"``), not dependencies of every install.
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
        "--size",
        type=int,
        default=256,
        help="side of the sample input used for tracing (multiple of 8)",
    )
    parser.add_argument("--verbose", action="store_true")
    return parser


def missing_onnx_modules() -> list[str]:
    """The modules ONNX export needs that are not installed."""
    return [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """``lama-inpaint export``: returns a process exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    fmt = args.format or ("onnx" if args.output.suffix.lower() == ".onnx" else "torchscript")
    if args.size % 8 or args.size < 16:
        print("lama-inpaint export: --size must be a multiple of 8, >= 16", file=sys.stderr)
        return EXIT_BAD_INPUT
    missing = missing_onnx_modules() if fmt == "onnx" else []
    if missing:  # before loading the model, in one line
        print(f"lama-inpaint export: ONNX export needs {' and '.join(missing)}: "
              f"pip install \"lama-inpaint[{EXPORT_EXTRA}]\"", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED

    from lama_model.accel.onnx import export_onnx, export_torchscript
    from lama_model.weights.checkpoint import CheckpointError, load_model

    try:
        model = load_model(args.model)
        if fmt == "onnx":
            opset = {} if args.opset is None else {"opset": args.opset}
            out = export_onnx(
                model, args.output, sample_size=args.size, verbose=args.verbose, **opset
            )
        else:
            out = export_torchscript(model, args.output, sample_size=args.size)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"lama-inpaint export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {fmt} model to {out}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover - manual use
    sys.exit(main())
