"""``lama-inpaint``: fill masked areas of image files, locally or through a running lama-server.

    lama-inpaint IMAGE MASK -o OUT [--model PATH|NAME] [--device ...] [--strategy ...] [--refine]
    lama-inpaint --input-dir D --output-dir O          (x.png with x_mask*.png, as upstream)
    lama-inpaint IMAGE MASK -o OUT --server tcp://127.0.0.1:5557
    lama-inpaint IMAGE --box X,Y,W,H -o OUT   (or --points X,Y[,LABEL];...: no mask file)
    lama-inpaint --input-dir D --output-dir O --ray [ADDRESS]   (a Ray Data job: ray_folder)
    lama-inpaint export --format onnx|torchscript MODEL -o FILE      (lama_server.commands.export)

Exit codes: 0 done, 1 the work failed (model, server), 2 bad input or usage.
It lives in ``lama_server`` because it is an application of both the model and the client;
``lama_model`` itself never imports the server side.

Every check that needs no model runs before the model loads (inputs readable, sizes that fit,
outputs writable, no output that would overwrite an input), so a mistake costs a second, not
a model load and a whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lama_model.choices import (
    BACKENDS,
    CHECKPOINT_HELP,
    DEVICE_CHOICES,
    PRECISIONS,
    SEGMENTERS,
    STRATEGIES,
)
from lama_model.pipeline.options import InpaintOptions, ProgressFn
from lama_server.commands import exit_codes, ray_folder
from lama_server.commands.image_files import (
    ImageFileError,
    ImageInfo,
    check_output,
    mask_turn,
    probe_image,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = exit_codes.OK, exit_codes.FAILED, exit_codes.USAGE
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_MODEL = "big-lama"


class BadInput(Exception):
    """Reported as one line, exit code 2."""


class Failed(Exception):
    """Reported as one line, exit code 1."""


Inpainter = Callable[[np.ndarray, np.ndarray, ProgressFn], np.ndarray]


@dataclass(frozen=True)
class Job:
    """One image, its mask, and the file the result goes to."""

    image: Path
    mask: Path
    output: Path


@dataclass(frozen=True)
class CheckedJob:
    """A job whose files were checked before the model loaded."""

    job: Job
    image: ImageInfo  # its header: size and orientation as displayed, metadata to keep


def build_parser() -> argparse.ArgumentParser:
    """The command line; building it (and ``--help``) loads no torch."""
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
    p.add_argument("--checkpoint", metavar="best|last|PATH", help=CHECKPOINT_HELP)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: measured once per machine and model: bf16/fp16/tf32 where faster than "
        "fp32 with PSNR >= 40 dB, else fp32 (TF32 off on CUDA)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
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
    # None: InpaintOptions' own defaults (one copy of them, in lama_model.pipeline.host).
    p.add_argument("--strategy", default=None, choices=STRATEGIES)
    p.add_argument("--mask-grow", type=int, default=None, metavar="N")
    p.add_argument("--feather", type=int, default=None, metavar="N")
    p.add_argument(
        "--resize-limit", type=int, default=None, metavar="PX",
        help=f"longest side a window is filled at (default {InpaintOptions().resize_limit}): "
        "larger windows are filled scaled down to it and the fill scaled up into the hole, "
        "faster but softer; with --server it is sent along (a server of protocol 1.6 or newer)",
    )  # fmt: skip
    p.add_argument(
        "--refine",
        action="store_true",
        help="high-resolution refinement: sharper fills on large holes, several times slower",
    )
    p.add_argument("--server", metavar="ENDPOINT", help="send the work to a running lama-server")
    _add_prompt_arguments(p)
    add_ray_arguments(p)
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar and no line saying what was written"
    )
    return p


def _add_prompt_arguments(p: argparse.ArgumentParser) -> None:
    """Remove the object a box or points point at, instead of reading a mask file."""
    p.add_argument(
        "--box", metavar="X,Y,W,H",
        help="remove the object inside this box (pixels, as the image is displayed); no MASK",
    )  # fmt: skip
    p.add_argument(
        "--points", metavar="X,Y[,L];...",
        help="points on the object (L=1, the default) or on the background (L=0); no MASK",
    )  # fmt: skip
    p.add_argument("--save-mask", type=Path, metavar="PATH",
                   help="with --box/--points: also write the object's mask (grown) there")
    p.add_argument("--segment-model", default=SEGMENTERS[0], metavar="NAME|PATH",
                   help=f"segmenter for --box/--points: {', '.join(SEGMENTERS)} or a "
                   f"checkpoint file (default {SEGMENTERS[0]}; a --server uses its own)")


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]`` and the actor pool's size (folder jobs on a Ray cluster)."""
    p.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="folder mode on a Ray cluster (pip install 'lama-inpaint[ray]'): ADDRESS of its head "
        "(auto: the cluster this machine is in; none given: start one on this machine); "
        "resumable: outputs that exist are skipped",
    )  # fmt: skip
    p.add_argument("--ray-actors", type=int, default=ray_folder.DEFAULT_ACTORS, metavar="N",
                   help="with --ray: model actors (each loads the model once)")  # fmt: skip
    p.add_argument("--ray-gpus", type=float, default=0.0, metavar="G",
                   help="with --ray: GPUs per actor (fractions share one); 0: CPU")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """``lama-inpaint``: returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["export"]:
        from lama_server.commands.export import main as export_main

        return export_main(args_list[1:])
    args = build_parser().parse_args(args_list)
    started = time.monotonic()
    try:
        if args.box is not None or args.points is not None:
            checked, first = _prompted_job(args)
        else:
            checked = check_jobs(plan_jobs(args))
            if args.ray is not None:
                return run_folder_on_ray(args, checked)
            # One image: decode it now, so an undecodable file is reported before the model
            # loads.
            first = read_job(checked[0]) if len(checked) == 1 else None
        inpainter = _make_inpainter(args)
        _run_jobs(checked, inpainter, first, quiet=args.quiet)
    except BadInput as exc:
        print(f"lama-inpaint: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Failed as exc:
        print(f"lama-inpaint: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("lama-inpaint: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except Exception as exc:  # the model failed to run: one line, not a traceback
        from lama_model.errors import one_line

        print(f"lama-inpaint: error: the model failed to run: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    if not args.quiet:
        print(_success_line(checked, time.monotonic() - started))
    return EXIT_OK


def _prompted_job(args: argparse.Namespace) -> tuple[list[CheckedJob], tuple]:
    """``IMAGE --box/--points -o OUT``: the checked job and its pixels with the object's mask
    (segmented, grown by ``--mask-grow`` as the plug-ins grow a selected object, written to
    ``--save-mask`` if asked). Prompts and files are checked before the segmenter loads."""
    from lama_server.commands import object_prompts as prompts
    from lama_server.commands.image_files import read_image, write_image

    if args.mask or args.input_dir or args.output_dir:
        raise BadInput("--box/--points replace the MASK: give IMAGE --box ... -o OUTPUT only")
    if not (args.image and args.output):
        raise BadInput("give IMAGE --box X,Y,W,H -o OUTPUT")
    if not args.image.is_file():
        raise BadInput(f"{args.image}: no such file")
    try:
        prompt = prompts.parse_prompt(args.box, args.points)
        job = Job(args.image, args.image, args.output)
        refuse_overwriting_inputs([job], [args.image])
        if args.save_mask is not None:
            if args.save_mask.resolve() == args.output.resolve():
                raise BadInput(f"--save-mask {args.save_mask} is the output; name another file")
            refuse_overwriting_inputs([Job(args.image, args.image, args.save_mask)],
                                      [args.image, args.output])  # fmt: skip
        info = probe_image(args.image)
        check_output(args.output, deep=info.deep, alpha=info.alpha)
        prompts.check_inside(prompt, info.width, info.height)
        image = read_image(args.image)
        if args.server:
            found = prompts.segment_on_server(image, prompt, args.server)
        else:
            found = prompts.segment_locally(image, prompt, args.segment_model, args.device)
    except (prompts.PromptInputError, ImageFileError) as exc:
        raise BadInput(str(exc)) from exc
    except prompts.SegmentFailed as exc:
        raise Failed(str(exc)) from exc
    if not found.any():
        raise Failed("the segmenter found no object there; widen the box or add points")
    grow = args.mask_grow if args.mask_grow is not None else _default_grow()
    mask = prompts.grown_mask(found, grow)
    if args.save_mask is not None:
        write_image(args.save_mask, mask)
    return [CheckedJob(job, info)], (image, mask)


def _default_grow() -> int:
    """The plug-ins' and the server's default grow (``InpaintOptions``' one copy of it)."""
    return InpaintOptions().mask_grow


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    """The jobs of a single-file or folder run; none writes over one of its inputs."""
    if args.input_dir or args.output_dir:
        if not (args.input_dir and args.output_dir) or args.image or args.output:
            raise BadInput("folder mode takes --input-dir and --output-dir and no file arguments")
        return find_folder_jobs(args.input_dir, args.output_dir)
    if not (args.image and args.mask and args.output):
        raise BadInput("give IMAGE MASK -o OUTPUT (or --input-dir/--output-dir)")
    for path in (args.image, args.mask):
        if not path.is_file():
            raise BadInput(f"{path}: no such file")
    job = Job(args.image, args.mask, args.output)
    refuse_overwriting_inputs([job], [job.image, job.mask])
    return [job]


def _file_key(path: Path) -> tuple[int, int] | None:
    """The file's identity: the same for every name of it (links, other letter case)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def refuse_overwriting_inputs(jobs: list[Job], inputs: list[Path]) -> None:
    """Refuse any output that names one of ``inputs``, or that two jobs would both write.

    Compared by file identity, so a link, a ``..`` detour or another letter case on a
    case-insensitive file system is seen through.
    """
    keys = {key: path for path in inputs if (key := _file_key(path)) is not None}
    written: dict[Path, Job] = {}
    for job in jobs:
        key = _file_key(job.output)
        if key in keys:
            raise BadInput(
                f"{job.output}: is the input {keys[key]}; writing there would destroy it "
                "(choose another output)"
            )
        name = Path(os.path.normcase(job.output.resolve()))
        if name in written:
            raise BadInput(
                f"{written[name].mask} and {job.mask} would both be written to {job.output}"
            )
        written[name] = job


def find_folder_jobs(input_dir: Path, output_dir: Path) -> list[Job]:
    """The official layout: ``x.png`` with ``x_mask.png`` (or ``x_mask001.png`` …).

    As in the official ``predict.py``, each output is named after its mask (one image may
    have several masks): ``in/sub/x_mask001.jpg`` → ``out/sub/x_mask001.png``. Images that
    no mask refers to are listed on stderr, not silently skipped. An output folder inside the
    input folder is not searched for inputs; one that is or holds the input folder is used only
    if no result would overwrite an input, and then the run says what it adds there.
    """
    if not input_dir.is_dir():
        raise BadInput(f"{input_dir}: no such folder")
    files = _input_files(input_dir, output_dir)
    jobs = []
    used: set[Path] = set()
    for mask in (p for p in files if "_mask" in p.name):
        stem = mask.name.split("_mask")[0]
        candidates = [p for p in mask.parent.glob(stem + ".*") if "_mask" not in p.name]
        if not candidates:
            raise BadInput(f"{mask}: no image {stem}.* beside this mask")
        image = sorted(candidates)[0]
        used.add(image)
        rel = mask.relative_to(input_dir).with_suffix(".png")
        jobs.append(Job(image, mask, output_dir / rel))
    if not jobs:
        raise BadInput(f"{input_dir}: no masks named like x_mask.png")
    refuse_overwriting_inputs(jobs, files)
    unmasked = [p for p in files if "_mask" not in p.name and p not in used
                and p.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
    if unmasked:
        shown = ", ".join(str(p.relative_to(input_dir)) for p in unmasked[:5])
        more = f" and {len(unmasked) - 5} more" if len(unmasked) > 5 else ""
        print(f"lama-inpaint: warning: {len(unmasked)} image(s) without a mask (named like "
              f"x_mask.png) left out: {shown}{more}", file=sys.stderr)  # fmt: skip
    if _overlaps(input_dir, output_dir):
        names = ", ".join(str(job.output) for job in jobs[:5])
        more = f" and {len(jobs) - 5} more" if len(jobs) > 5 else ""
        print(f"lama-inpaint: note: the output folder is or holds the input folder; no input "
              f"is overwritten; writing {len(jobs)} file(s): {names}{more}",
              file=sys.stderr)  # fmt: skip
    return jobs


def _input_files(input_dir: Path, output_dir: Path) -> list[Path]:
    """Every file under ``input_dir``, sorted, minus an output folder nested inside it (a
    rerun must not take the last run's results for masks)."""
    inside, root = output_dir.resolve(), input_dir.resolve()
    skip = inside if root in inside.parents else None
    return sorted(
        p for p in input_dir.rglob("*.*")
        if p.is_file() and not (skip is not None and skip in p.resolve().parents)
    )  # fmt: skip


def _overlaps(input_dir: Path, output_dir: Path) -> bool:
    """The output folder is the input folder or one of its parents."""
    outer, inner = output_dir.resolve(), input_dir.resolve()
    return outer == inner or outer in inner.parents


def check_jobs(jobs: list[Job]) -> list[CheckedJob]:
    """Every check that needs no model: inputs are images, masks fit, outputs can be written.

    Reads file headers only (a second for thousands of files); pixels are decoded later.
    """
    checked = []
    for job in jobs:
        try:
            image = probe_image(job.image)
            mask_turn(probe_image(job.mask), image.size, image.orientation)  # or a mismatch
            check_output(job.output, deep=image.deep, alpha=image.alpha)
        except ImageFileError as exc:
            raise BadInput(str(exc)) from exc
        checked.append(CheckedJob(job, image))
    return checked


def read_job(checked: CheckedJob) -> tuple[np.ndarray, np.ndarray]:
    """The job's pixels, upright, and its mask in the same frame."""
    from lama_server.commands.image_files import read_image, read_mask

    try:
        image = read_image(checked.job.image)
        mask = read_mask(checked.job.mask, image.shape[:2], checked.image.orientation)
    except ImageFileError as exc:
        raise BadInput(str(exc)) from exc
    return image, mask


def run_folder_on_ray(args: argparse.Namespace, checked: list[CheckedJob]) -> int:
    """The folder job on Ray: progress, a summary line, one line per failed image; exit 1 if
    any failed (rerun the same command to retry only those)."""
    if not args.input_dir or args.server or args.ray_actors < 1 or args.ray_gpus < 0:
        raise BadInput("--ray runs folder jobs: --input-dir/--output-dir, no --server, "
                       "--ray-actors >= 1, --ray-gpus >= 0")  # fmt: skip
    _inpaint_options(args)  # a bad option is one line here, not one per actor
    try:
        import ray  # noqa: F401  (only to say how to install it)
    except ImportError as exc:
        raise BadInput("--ray needs Ray: pip install 'lama-inpaint[ray]'") from exc
    started = time.monotonic()
    ray_folder.connect(None if args.ray == "local" else args.ray)
    jobs = [(c.job.image, c.job.mask, c.job.output) for c in checked]
    try:
        summary = ray_folder.run_folder(
            jobs, functools.partial(make_image_task, args), actors=args.ray_actors,
            gpus_per_actor=args.ray_gpus, quiet=args.quiet,
        )  # fmt: skip
    except ray_folder.ModelLoadError as exc:
        raise Failed(f"a Ray actor could not load the model: {exc}") from exc
    for image, reason in summary.failures:
        print(f"lama-inpaint: failed: {image}: {reason}", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {summary.written} images to {args.output_dir}, skipped "
              f"{summary.skipped} already done, {len(summary.failures)} failed "
              f"in {time.monotonic() - started:.1f} s")  # fmt: skip
    return EXIT_FAILED if summary.failures else EXIT_OK


def make_image_task(args: argparse.Namespace) -> Callable[[str, str, str], None]:
    """Load the model once; return the function that fills one (image, mask, output) exactly
    as the local folder mode does (same checks, decoding, model and atomic write)."""
    from lama_server.commands.image_files import write_image

    inpaint_fn = _make_inpainter(args)

    def run(image: str, mask: str, output: str) -> None:
        item = check_jobs([Job(Path(image), Path(mask), Path(output))])[0]
        pixels, mask_pixels = read_job(item)
        result = inpaint_fn(pixels, mask_pixels, lambda _fraction, _stage: None)
        item.job.output.parent.mkdir(parents=True, exist_ok=True)
        write_image(item.job.output, result, item.image)

    return run


def _inpaint_options(args: argparse.Namespace):
    """The pipeline options the flags give, or BadInput."""
    given = {
        "mask_grow": args.mask_grow,
        "feather": args.feather,
        "strategy": args.strategy,
        "resize_limit": args.resize_limit,
    }
    try:
        return InpaintOptions(
            **{name: value for name, value in given.items() if value is not None},
            refine=args.refine,
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from exc


def _make_inpainter(args: argparse.Namespace) -> Inpainter:
    options = _inpaint_options(args)
    if args.server:
        if args.backend != "torch" or args.precision != "auto" or args.compile or args.checkpoint:
            raise BadInput(
                "--backend, --precision, --compile and --checkpoint choose local inference; "
                "a lama-server picks its own (see lama-server --help)"
            )
        return _remote_inpainter(args.server, options, _server_resize_limit(args.resize_limit))
    if args.refine and args.backend != "torch":  # before a slow export, not after
        raise BadInput("--refine needs the torch backend (it runs a backward pass)")
    return _local_inpainter(args, options)


def _local_inpainter(args: argparse.Namespace, options) -> Inpainter:
    from lama_model.accel.precision import PrecisionError
    from lama_model.devices import DeviceError, resolve_device
    from lama_model.factory import BackendError, load_for_inference
    from lama_model.pipeline import inpaint
    from lama_model.weights.checkpoint import CheckpointError, model_source
    from lama_model.weights.downloads import WeightsError

    try:
        device = resolve_device(args.device)
        source = model_source(args.model, args.checkpoint)
        model = load_for_inference(
            source, device, args.precision, backend=args.backend, compile=args.compile,
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

    def run(image: np.ndarray, mask: np.ndarray, progress: ProgressFn) -> np.ndarray:
        return inpaint(model, image, mask, options, progress).image

    return run


def _server_resize_limit(value: int | None) -> int | None:
    """``--resize-limit`` for a server: None (not given: the server's default) or a value in
    the protocol's range, checked here so a bad one fails before anything is sent."""
    from lama_server.wire.protocol import MAX_RESIZE_LIMIT, MIN_RESIZE_LIMIT

    if value is not None and not MIN_RESIZE_LIMIT <= value <= MAX_RESIZE_LIMIT:
        raise BadInput(
            f"--resize-limit with --server must be in {MIN_RESIZE_LIMIT}..{MAX_RESIZE_LIMIT} "
            f"pixels, not {value}"
        )
    return value


def _remote_inpainter(endpoint: str, options, resize_limit: int | None = None) -> Inpainter:
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

    def run(image: np.ndarray, mask: np.ndarray, progress: ProgressFn) -> np.ndarray:
        try:
            fmt = format_for_array(image)
        except ValueError as exc:
            raise BadInput(str(exc)) from exc
        h, w = image.shape[:2]
        request = lama_client.ImageData(w, h, fmt, array_to_wire(fmt, image))
        try:
            reply = conn.inpaint(request, mask.tobytes(), wire_options, progress,
                                 resize_limit=resize_limit)  # fmt: skip
        except lama_client.LamaError as exc:
            raise Failed(f"server {endpoint}: {exc.message}") from exc
        return wire_to_array(reply.format, reply.width, reply.height, reply.data).reshape(
            image.shape
        )

    return run


def _run_jobs(
    checked: list[CheckedJob],
    inpaint_fn: Inpainter,
    first: tuple[np.ndarray, np.ndarray] | None,
    quiet: bool,
) -> None:
    """Fill and write each job: a bar over the files in folder mode, over the work itself
    for one file on a terminal."""
    from tqdm import tqdm

    from lama_server.commands.image_files import write_image

    folder_bar = None if quiet or len(checked) == 1 else tqdm(
        total=len(checked), unit="image", file=sys.stderr
    )  # fmt: skip
    show_work = not quiet and len(checked) == 1 and sys.stderr.isatty()
    for item in checked:
        image, mask = first if first is not None else read_job(item)
        with _work_progress(show_work) as progress:
            result = inpaint_fn(image, mask, progress)
        try:
            item.job.output.parent.mkdir(parents=True, exist_ok=True)
            write_image(item.job.output, result, item.image)
        except (ImageFileError, OSError) as exc:
            raise BadInput(f"{item.job.output}: cannot write ({exc})") from exc
        if folder_bar is not None:
            folder_bar.update(1)
    if folder_bar is not None:
        folder_bar.close()


@contextlib.contextmanager
def _work_progress(shown: bool) -> Iterator[ProgressFn]:
    """A percentage bar on stderr fed by the pipeline's ``progress(fraction, stage)``."""
    if not shown:
        yield lambda _fraction, _stage: None
        return
    from tqdm import tqdm

    bar = tqdm(total=100, file=sys.stderr, bar_format="{desc} {bar} {n}%")

    def update(fraction: float, stage: str) -> None:
        bar.set_description_str(stage, refresh=False)
        bar.n = round(100 * min(max(fraction, 0.0), 1.0))
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def _success_line(checked: list[CheckedJob], seconds: float) -> str:
    """``wrote out.png (W×H) in N s``, or the count and folder of a folder run."""
    if len(checked) == 1:
        job, image = checked[0].job, checked[0].image
        return f"wrote {job.output} ({image.width}×{image.height}) in {seconds:.1f} s"
    folders = {item.job.output.parent for item in checked}
    where = f" to {folders.pop()}" if len(folders) == 1 else ""
    return f"wrote {len(checked)} images{where} in {seconds:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
