"""``lama-inpaint``: fill masked areas of image files, locally or through a running lama-server.

    lama-inpaint IMAGE MASK -o OUT [--model PATH|NAME] [--device ...] [--strategy ...] [--refine]
    lama-inpaint --input-dir D --output-dir O          (x.png with x_mask*.png, as upstream)
    lama-inpaint IMAGE MASK -o OUT --server tcp://127.0.0.1:5557

Exit codes: 0 done, 1 the work failed (model, server), 2 bad input or usage.
It lives in ``lama_server`` because it is an application of both the model and the client;
``lama_model`` itself never imports the server side.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_MODEL = "big-lama"


class BadInput(Exception):
    """Reported as one line, exit code 2."""


class Failed(Exception):
    """Reported as one line, exit code 1."""


Inpainter = Callable[[np.ndarray, np.ndarray], np.ndarray]


def build_parser() -> argparse.ArgumentParser:
    from lama_model.choices import DEVICE_CHOICES, STRATEGIES
    from lama_model.pipeline import InpaintOptions

    defaults = InpaintOptions()
    p = argparse.ArgumentParser(
        prog="lama-inpaint",
        description="Remove objects from photos with LaMa. White in the mask is filled.",
        epilog="Export: lama-inpaint export --format onnx|torchscript MODEL -o FILE",
    )
    p.add_argument("image", nargs="?", type=Path, help="input image")
    p.add_argument("mask", nargs="?", type=Path, help="mask image, same size (white = fill)")
    p.add_argument("-o", "--output", type=Path, help="output file")
    p.add_argument("--input-dir", type=Path, help="folder mode: x.png with x_mask*.png")
    p.add_argument("--output-dir", type=Path, help="folder mode: where results go")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model folder/file or known name")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "tf32", "fp16", "bf16"),
        help="auto: measured once per machine and model: bf16/fp16/tf32 where faster than "
        "fp32 with PSNR >= 40 dB, else fp32 (TF32 off on CUDA)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime"),
        help="torch (fused fast path) or onnxruntime (exports the model once, or give an .onnx)",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile (slow first run per size)"
    )
    p.add_argument(
        "--allow-torchscript",
        action="store_true",
        help="load a TorchScript model file: it runs the code it holds, so only trusted files",
    )
    p.add_argument("--strategy", default=defaults.strategy, choices=STRATEGIES)
    p.add_argument("--mask-grow", type=int, default=defaults.mask_grow, metavar="N")
    p.add_argument("--feather", type=int, default=defaults.feather, metavar="N")
    p.add_argument("--resize-limit", type=int, default=defaults.resize_limit, metavar="PX")
    p.add_argument(
        "--refine",
        action="store_true",
        help="high-resolution refinement: sharper fills on large holes, several times slower",
    )
    p.add_argument("--server", metavar="ENDPOINT", help="send the work to a running lama-server")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["export"]:
        from lama_model.accel.onnx import main as export_main

        return export_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        jobs = _plan_jobs(args)
        inpainter = _make_inpainter(args)
        _run_jobs(jobs, inpainter, quiet=args.quiet or len(jobs) == 1)
    except BadInput as exc:
        print(f"lama-inpaint: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Failed as exc:
        print(f"lama-inpaint: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("lama-inpaint: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the model failed to run: one line, not a traceback
        from lama_server.commands.serve import one_line

        print(f"lama-inpaint: error: the model failed to run: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _plan_jobs(args: argparse.Namespace) -> list[tuple[Path, Path, Path]]:
    """(image, mask, output) triples for single-file or folder mode."""
    if args.input_dir or args.output_dir:
        if not (args.input_dir and args.output_dir) or args.image or args.output:
            raise BadInput("folder mode takes --input-dir and --output-dir and no file arguments")
        return find_folder_jobs(args.input_dir, args.output_dir)
    if not (args.image and args.mask and args.output):
        raise BadInput("give IMAGE MASK -o OUTPUT (or --input-dir/--output-dir)")
    for path in (args.image, args.mask):
        if not path.is_file():
            raise BadInput(f"{path}: no such file")
    return [(args.image, args.mask, args.output)]


def find_folder_jobs(input_dir: Path, output_dir: Path) -> list[tuple[Path, Path, Path]]:
    """The official layout: ``x.png`` with ``x_mask.png`` (or ``x_mask001.png`` …).

    As in the official ``predict.py``, each output is named after its mask (one image may
    have several masks): ``in/sub/x_mask001.jpg`` → ``out/sub/x_mask001.png``. Images that
    no mask refers to are listed on stderr, not silently skipped.
    """
    if not input_dir.is_dir():
        raise BadInput(f"{input_dir}: no such folder")
    jobs = []
    used: set[Path] = set()
    for mask in sorted(input_dir.rglob("*_mask*.*")):
        stem = mask.name.split("_mask")[0]
        candidates = [p for p in mask.parent.glob(stem + ".*") if "_mask" not in p.name]
        if not candidates:
            raise BadInput(f"{mask}: no image {stem}.* beside this mask")
        image = sorted(candidates)[0]
        used.add(image)
        rel = mask.relative_to(input_dir).with_suffix(".png")
        jobs.append((image, mask, output_dir / rel))
    if not jobs:
        raise BadInput(f"{input_dir}: no masks named like x_mask.png")
    unmasked = sorted(
        p for p in input_dir.rglob("*.*")
        if p.is_file() and "_mask" not in p.name and p not in used
        and p.suffix.lower() in IMAGE_SUFFIXES
    )  # fmt: skip
    if unmasked:
        shown = ", ".join(str(p.relative_to(input_dir)) for p in unmasked[:5])
        more = f" and {len(unmasked) - 5} more" if len(unmasked) > 5 else ""
        print(f"lama-inpaint: warning: {len(unmasked)} image(s) without a mask (named like "
              f"x_mask.png) left out: {shown}{more}", file=sys.stderr)  # fmt: skip
    return jobs


def _make_inpainter(args: argparse.Namespace) -> Inpainter:
    from lama_model.pipeline import InpaintOptions

    try:
        options = InpaintOptions(
            mask_grow=args.mask_grow,
            feather=args.feather,
            strategy=args.strategy,
            resize_limit=args.resize_limit,
            refine=args.refine,
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    if args.server:
        if args.backend != "torch" or args.precision != "auto" or args.compile:
            raise BadInput(
                "--backend, --precision and --compile choose local inference; "
                "a lama-server picks its own (see lama-server --help)"
            )
        return _remote_inpainter(args.server, options)
    if args.refine and args.backend != "torch":  # before a slow export, not after
        raise BadInput("--refine needs the torch backend (it runs a backward pass)")
    return _local_inpainter(args, options)


def _local_inpainter(args: argparse.Namespace, options) -> Inpainter:
    from lama_model.accel.precision import PrecisionError
    from lama_model.devices import DeviceError, resolve_device
    from lama_model.factory import BackendError, load_for_inference
    from lama_model.pipeline import inpaint
    from lama_model.weights.checkpoint import CheckpointError
    from lama_model.weights.downloads import WeightsError

    try:
        device = resolve_device(args.device)
        model = load_for_inference(
            args.model, device, args.precision, backend=args.backend, compile=args.compile,
            allow_torchscript=args.allow_torchscript,
        )  # fmt: skip
    except (BackendError, PrecisionError) as exc:
        raise BadInput(str(exc)) from exc
    except (CheckpointError, DeviceError, WeightsError) as exc:
        raise Failed(str(exc)) from exc
    if options.refine:
        from lama_model.pipeline import RefineError
        from lama_model.pipeline.refine import refinable_generator

        try:
            refinable_generator(model)
        except RefineError as exc:
            raise BadInput(str(exc)) from exc

    def run(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return inpaint(model, image, mask, options).image

    return run


def _remote_inpainter(endpoint: str, options) -> Inpainter:
    from lama_client import client as lama_client
    from lama_server.wire.pixel_formats import array_to_wire, format_for_array, wire_to_array

    # Refinement may run for many minutes on a CPU server: wait longer for the whole request.
    conn = lama_client.LamaClient(endpoint, **({"timeout": 3600.0} if options.refine else {}))
    wire_options = {
        "mask_grow": options.mask_grow,
        "feather": options.feather,
        "strategy": options.strategy,
    }
    if options.refine:  # only sent when asked: servers before refinement reject the key
        wire_options["refine"] = True

    def run(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        try:
            fmt = format_for_array(image)
        except ValueError as exc:
            raise BadInput(str(exc)) from exc
        h, w = image.shape[:2]
        request = lama_client.ImageData(w, h, fmt, array_to_wire(fmt, image))
        try:
            reply = conn.inpaint(request, mask.tobytes(), wire_options)
        except lama_client.LamaError as exc:
            raise Failed(f"server {endpoint}: {exc.message}") from exc
        return wire_to_array(reply.format, reply.width, reply.height, reply.data).reshape(
            image.shape
        )

    return run


def _run_jobs(jobs: list[tuple[Path, Path, Path]], inpaint_fn: Inpainter, quiet: bool) -> None:
    from lama_server.commands.image_files import ImageFileError, read_image, read_mask, write_image

    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="image", file=sys.stderr)
    for image_path, mask_path, out_path in jobs:
        try:
            image = read_image(image_path)
            mask = read_mask(mask_path, image.shape[:2])
        except ImageFileError as exc:
            raise BadInput(str(exc)) from exc
        result = inpaint_fn(image, mask)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_image(out_path, result)
        except ImageFileError as exc:
            raise BadInput(str(exc)) from exc
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
