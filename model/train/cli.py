"""``lama-train``: train or fine-tune LaMa on a folder of photos, judge it, write mask sets.

    lama-train fit PHOTOS/ --out runs/NAME [--init big-lama] [--steps N] ...
    lama-train fit --resume --out runs/NAME [--steps N]
    torchrun --nproc-per-node 8 --no-python lama-train fit PHOTOS/ --out runs/NAME ...
    lama-train masks --kind large --size 256 -n 100 OUT/
    lama-train eval MODEL HELD_OUT/ [--masks thin|medium|thick|FOLDER] [--json OUT]

Exit codes: 0 done, 1 the run failed, 2 bad input (one line on stderr, no traceback), 130
interrupted (Ctrl-C; ``fit`` first saves a checkpoint that ``--resume`` continues).

``--help`` loads no torch: the choices come from :mod:`lama_model.choices`, and everything that
needs torch is imported once a command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from lama_model.choices import (
    CHECKPOINT_HELP,
    PERCEPTUAL_ENCODERS,
    TRAIN_DISCRIMINATORS,
    TRAIN_GENERATORS,
    TRAIN_PRECISIONS,
)
from lama_model.errors import first_line
from lama_model.train.augment import AUGMENTATIONS
from lama_model.train.mask_gen import MASK_KINDS
from lama_model.weights.downloads import KNOWN_MODELS, WeightsError, ensure_model
from lama_model.weights.official_config import ConfigError

if TYPE_CHECKING:
    from lama_model.net.generator import LamaConfig
    from lama_model.train.config import TrainConfig

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C

# Options a resumed run may change; everything else is fixed by the run's config.yaml.
RESUME_MAY_CHANGE = ("steps", "workers", "device", "data", "progress")

_FIT_EPILOG = """\
examples:
  fine-tune Big LaMa on your photos (downloads big-lama once; its checkpoint also carries the
  discriminator and the perceptual loss's network, so nothing else is downloaded):
      lama-train fit photos/ --out runs/mine --init big-lama --steps 20000 --batch-size 8
  continue that run, or extend it to more steps:
      lama-train fit --resume --out runs/mine --steps 40000
  train Big LaMa from scratch on 8 GPUs (batch 15 per GPU = the paper's 120):
      torchrun --nproc-per-node 8 --no-python lama-train fit places/ --out runs/big \\
          --batch-size 15 --resnet-pl encoder_epoch_20.pth
  on a CPU, offline (no perceptual loss, so an L1 signal in the hole; an hour is too short):
      lama-train fit photos/ --out runs/small --generator small --discriminator small \\
          --crop 128 --batch-size 4 --max-side 768 --resnet-pl-weight 0 --l1-missing-weight 2
  use the result:
      lama-inpaint photo.jpg mask.png -o out.png --model runs/mine

A run folder holds config.yaml, models/last.ckpt, models/best.ckpt (best validation
ssim_fid100_f1, the official monitor, once `lama-train eval` has installed the FID network;
else best validation SSIM; models/best.json says which step it is and why), train.csv, val.csv,
samples/ (preview grids: masked input | output | inpainted | target) and tb/ (TensorBoard, if
installed). `lama-inpaint --model` and `lama-server --model` take it as is (best.ckpt, or
last.ckpt before the first validation).
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``lama-train`` command line: ``fit``, ``masks`` and ``eval``."""
    parser = argparse.ArgumentParser(
        prog="lama-train",
        description="Train or fine-tune LaMa on your own photos, judge it, or write mask sets.\n"
        + __doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fit,masks,eval}")
    fit = sub.add_parser(
        "fit",
        help="train or fine-tune on a folder of photos",
        description="Train or fine-tune LaMa with the paper's recipe: large masks, the "
        "high-receptive-field perceptual loss (ResNetPL), adversarial training with R1, "
        "feature matching. Options left out keep Big LaMa's values.",
        epilog=_FIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # so a resumed run knows what was really given
    )
    _add_run_options(fit)
    _add_schedule_options(fit.add_argument_group("schedule and data"))
    _add_optimisation_options(fit.add_argument_group("optimisation"))
    _add_speed_options(fit.add_argument_group("speed"))
    _add_progress_options(fit.add_argument_group("progress and validation"))
    _add_masks_command(sub)
    _add_eval_command(sub)
    return parser


def _add_run_options(fit: argparse.ArgumentParser) -> None:
    fit.add_argument(
        "data", nargs="?", help="folder of JPEG/PNG/WebP photos (searched recursively)"
    )
    fit.add_argument("--out", required=True, metavar="RUN",
                     help="run folder to create (or to --resume)")  # fmt: skip
    fit.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    fit.add_argument(
        "--init", metavar="PATH|big-lama",
        help="fine-tune from a model folder (the official big-lama folder, or one of our runs) "
        "or a .ckpt; its architecture is used unless --generator is given",
    )  # fmt: skip
    _add_architecture_options(fit)


# Generator parameters in millions, for --help (which loads no torch); a test builds each preset
# and checks its count against this table.
GENERATOR_MILLIONS = {"big-lama": 51.0, "lama-fourier": 27.0, "small": 3.4, "tiny": 0.5}


def _add_architecture_options(fit: argparse.ArgumentParser) -> None:
    sizes = {name: f"{GENERATOR_MILLIONS[name]}M parameters" for name in TRAIN_GENERATORS}
    fit.add_argument("--generator", choices=list(TRAIN_GENERATORS),
                     help=f"architecture when training from scratch: big-lama ({sizes['big-lama']}"
                     f"; default), lama-fourier ({sizes['lama-fourier']}), small (ngf 32, 4 "
                     f"blocks, {sizes['small']}: sized for a CPU, with --discriminator small "
                     "and --crop 128; but an hour on 2 CPU cores is a few hundred steps, too few "
                     "to fill holes better than OpenCV's Telea inpainting: README, 'Does small "
                     f"train usefully on a laptop?'), tiny ({sizes['tiny']}; for tests: it "
                     "learns little)")  # fmt: skip
    fit.add_argument("--ngf", type=int, metavar="N",
                     help="generator width (channels of its first layer; big-lama 64) instead of "
                     "the preset's")  # fmt: skip
    fit.add_argument("--n-blocks", type=int, metavar="N",
                     help="FFC residual blocks (big-lama 18) instead of the preset's")  # fmt: skip
    fit.add_argument("--discriminator", choices=list(TRAIN_DISCRIMINATORS),
                     help="big: Big LaMa's (ndf 64, 4 layers, 7.0M parameters; default); small: "
                     "ndf 32, 3 layers, 0.7M; tiny: ndf 8, 2 layers, for tests")  # fmt: skip


def _add_schedule_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--steps", type=int, help="total optimiser steps (default 100000)")
    group.add_argument("--batch-size", type=int,
                       help="images per process per micro-batch (default 8)")  # fmt: skip
    group.add_argument("--accumulate", type=int,
                       help="micro-batches per step (gradient accumulation; 1)")  # fmt: skip
    group.add_argument("--crop", type=int, help="training crop size (default 256)")
    group.add_argument("--workers", type=int, help="data-loading processes (default 4, or one "
                       "less than the CPUs if fewer)")  # fmt: skip
    group.add_argument("--mask-kind", choices=MASK_KINDS,
                       help="training masks (default large: the Big LaMa mix)")  # fmt: skip
    group.add_argument("--augment", choices=AUGMENTATIONS,
                       help="official (default): the paper's distortions pipeline, run by "
                       "albumentations (pip install 'lama-inpaint[train]'); numpy: a NumPy/PIL "
                       "approximation of it for installs without albumentations, NOT the "
                       "official pipeline; none: random crops only")  # fmt: skip
    group.add_argument("--max-side", type=int, metavar="N",
                       help="shrink photos whose long side is over N px before cropping (default: "
                       "use them as they are, as the official code does; on a CPU, 768 to 1024 "
                       "makes big photos much faster to load)")  # fmt: skip
    group.add_argument("--seed", type=int, help="seed for weights, data order, masks (default 0)")


def _add_optimisation_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--lr-generator", type=float, help="Adam lr of the generator (1e-3)")
    group.add_argument("--lr-discriminator", type=float,
                       help="Adam lr of the discriminator (1e-4)")  # fmt: skip
    group.add_argument("--grad-clip", type=float, help="gradient-norm clip per network (1)")
    group.add_argument("--resnet-pl-weight", type=float,
                       help="weight of the ResNetPL perceptual loss (30). 0 turns it off and "
                       "downloads nothing: the offline route. Without it the hole gets no "
                       "reconstruction signal (the official L1 weighs only the known pixels), "
                       "so fills stay blurry colour blobs; add --l1-missing-weight")  # fmt: skip
    group.add_argument("--l1-missing-weight", type=float, metavar="W",
                       help="L1 weight inside the hole (official 0: the perceptual and "
                       "adversarial losses shape the hole). 1 to 3 gives a run without the "
                       "perceptual loss a direct signal there; not the paper's recipe")  # fmt: skip
    group.add_argument("--resnet-pl", metavar="PATH",
                       help="local encoder_epoch_20.pth (ADE20k ResNet-50-dilated) instead of "
                       "the download")  # fmt: skip
    group.add_argument("--perceptual-encoder", choices=PERCEPTUAL_ENCODERS,
                       help="FOR TESTS ONLY: tiny-random-for-tests replaces the perceptual "
                       "network by a small random one")  # fmt: skip


def _add_speed_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    group.add_argument("--precision", choices=TRAIN_PRECISIONS,
                       help="fp32 (default) or bf16 autocast (FFTs stay float32)")  # fmt: skip
    group.add_argument("--channels-last", action="store_true", help="channels-last tensors")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the generator and the perceptual encoder")  # fmt: skip


def _add_progress_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--log-every", type=int, help="steps per train.csv row (50)")
    group.add_argument("--preview-every", type=int, help="steps per preview grid (500)")
    group.add_argument("--val-every", type=int, help="steps per validation (default: a tenth "
                       "of --steps, at least 50, at most 2000)")  # fmt: skip
    group.add_argument("--save-every", type=int, help="steps per models/last.ckpt (1000)")
    group.add_argument("--val-data", help="validation photos (default: the training folder)")
    group.add_argument("--val-count", type=int, help="validation images (32)")
    group.add_argument("--val-size", type=int, help="validation crop size (256)")
    group.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar")  # fmt: skip


def _add_masks_command(sub: argparse._SubParsersAction) -> None:
    masks = sub.add_parser(
        "masks",
        help="write a set of random masks as PNG files",
        description="Write COUNT masks (PNG, 255 = hole) drawn by the training mask generator.",
    )
    masks.add_argument("out", help="output folder")
    masks.add_argument("--kind", default="large",
                       help="large (Big LaMa training mix), thin, medium, thick")  # fmt: skip
    masks.add_argument("--size", type=int, default=256, help="masks are SIZE×SIZE (256; the "
                       "official settings are for 256, other sizes scale them)")  # fmt: skip
    masks.add_argument("-n", "--count", type=int, default=100, help="how many (100)")
    masks.add_argument("--seed", type=int, default=0, help="random seed (0)")


_EVAL_EPILOG = """\
The photos are scaled so that their short side is SIZE and centre-cropped; each gets a mask
(thin, medium, thick: the official evaluation mask settings, drawn from --seed; or a folder of
SIZE×SIZE PNG masks). LPIPS (VGG-16), FID (pytorch-fid's Inception) and SSIM are computed as
the official LaMa evaluator computes them, per mask-area bin ("0-10%" … "90-100%") and in
total; PSNR is added. The three networks (about 620 MB) are downloaded once, checksums pinned.
FID needs many images to mean much: the paper uses 2000 or more; a bin of one image has none.

example: compare a fine-tune with its starting point on held-out photos (one table)
    lama-train eval big-lama held-out/ --masks thick --json before.json
    lama-train eval runs/mine held-out/ --masks thick --compare before.json
Offline, --psnr-ssim-only judges without the three networks (not the paper's measures).
"""


def _add_eval_command(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="judge a model as the paper does: LPIPS, FID, PSNR, SSIM per mask-area bin",
        description="Inpaint the photos in DATA with MODEL and print one table: LPIPS, FID, "
        "PSNR and SSIM per mask-area bin and in total.",
        epilog=_EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("model", help="a model as lama-inpaint --model takes it: a run or model "
                    "folder, a .ckpt/.pth/.pt file, or a known name (big-lama)")  # fmt: skip
    ev.add_argument("data", help="folder of held-out photos (JPEG, PNG, WebP; recursive)")
    ev.add_argument("--checkpoint", metavar="best|last|PATH", help=CHECKPOINT_HELP)
    ev.add_argument("--masks", default="thick",
                    help="thin, medium, thick (the official evaluation sets; default thick), "
                    "large (the training mix), or a folder of SIZE×SIZE PNG masks")  # fmt: skip
    ev.add_argument("--size", type=int, default=256, help="photos are evaluated at SIZE×SIZE (256)")
    ev.add_argument("--seed", type=int, default=0, help="random seed of the drawn masks (0)")
    ev.add_argument("--json", metavar="OUT", help="also write the results to OUT as JSON")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (auto)")
    ev.add_argument("--batch-size", type=int, default=8, help="images per forward pass (8)")
    ev.add_argument("--compare", metavar="BEFORE.json",
                    help="print one table of each metric before → after: BEFORE.json is an "
                    "earlier --json of the same photos, masks, size and seed")  # fmt: skip
    ev.add_argument("--psnr-ssim-only", action="store_true",
                    help="judge by PSNR and SSIM alone and download nothing (offline); LPIPS and "
                    "FID, the paper's measures, show as n/a")  # fmt: skip
    ev.add_argument("--allow-torchscript", action="store_true",
                    help="load a TorchScript MODEL (it runs the code it holds)")  # fmt: skip


# Loss-weight options → LossConfig fields.
_LOSS_OPTIONS = {"resnet_pl_weight": "resnet_pl_weight", "l1_missing_weight": "l1_weight_missing"}

_FIELD_OF_OPTION = {
    "lr_generator": "generator_lr",
    "lr_discriminator": "discriminator_lr",
}


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """The run's config from the command line (and, resuming, from the run's config.yaml)."""
    from lama_model.train.config import (
        DISCRIMINATOR_PRESETS,
        GENERATOR_PRESETS,
        LossConfig,
        TrainConfig,
        architecture_from_folder,
        default_val_every,
    )

    given = dict(vars(args))
    for name in ("command", "out", "resume", "init", "generator", "discriminator", "progress",
                 "resnet_pl_weight", "l1_missing_weight", "ngf", "n_blocks"):  # fmt: skip
        given.pop(name, None)
    fields_given = {_FIELD_OF_OPTION.get(k, k): v for k, v in given.items()}
    run_dir = Path(args.out)
    if getattr(args, "resume", False):
        fixed = sorted(set(vars(args)) - {"command", "out", "resume", *RESUME_MAY_CHANGE})
        if fixed:
            names = ", ".join("--" + n.replace("_", "-") for n in fixed)
            raise ValueError(f"a resumed run keeps its settings; cannot change {names}")
        if not (run_dir / "config.yaml").is_file():
            raise ValueError(
                f"{run_dir}: nothing to resume (no config.yaml: not a lama-train run folder); "
                f"start one with lama-train fit PHOTOS --out {run_dir}"
            )
        config = TrainConfig.load(run_dir / "config.yaml")
        changes = {k: v for k, v in fields_given.items() if k in RESUME_MAY_CHANGE}
        return config.with_changes(run_dir=str(run_dir), **changes), True
    if not getattr(args, "data", None):
        raise ValueError("give the photo folder to train on (or --resume an existing run)")
    if not Path(args.data).is_dir():
        raise ValueError(f"{args.data}: no such folder")
    init = getattr(args, "init", None)
    if init is not None:
        init = _resolve_init(init)
        fields_given["init_from"] = str(init)
    generator = getattr(args, "generator", None)
    if generator is not None:
        fields_given["generator"] = GENERATOR_PRESETS[generator]
    elif init is not None:
        folder = init if init.is_dir() else init.parent.parent
        if not (folder / "config.yaml").is_file():
            raise ValueError(f"{init}: no config.yaml beside it; say --generator explicitly")
        fields_given["generator"], fields_given["discriminator"] = architecture_from_folder(folder)
    fields_given["generator"] = _resized_generator(args, fields_given.get("generator"))
    if getattr(args, "discriminator", None) is not None:
        fields_given["discriminator"] = DISCRIMINATOR_PRESETS[args.discriminator]
    loss_changes = {field: vars(args)[option] for option, field in _LOSS_OPTIONS.items()
                    if option in vars(args)}  # fmt: skip
    if loss_changes:
        fields_given["losses"] = LossConfig(**loss_changes)
    if "val_every" not in fields_given:
        fields_given["val_every"] = default_val_every(fields_given.get("steps", 100_000))
    return TrainConfig(run_dir=str(run_dir), run_title=run_dir.name, **fields_given), False


def _resized_generator(args: argparse.Namespace, chosen: LamaConfig | None) -> LamaConfig:
    """The generator with --ngf / --n-blocks applied (a fine-tune keeps its model's shape)."""
    from lama_model.train.config import GENERATOR_PRESETS

    base = chosen or GENERATOR_PRESETS["big-lama"]
    changes = {k: getattr(args, k) for k in ("ngf", "n_blocks") if k in vars(args)}
    if not changes:
        return base
    if getattr(args, "init", None) is not None and getattr(args, "generator", None) is None:
        raise ValueError("--ngf and --n-blocks shape a new generator; a fine-tune (--init) "
                         "keeps its model's")  # fmt: skip
    for name, value in changes.items():
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    return replace(base, **changes)


def _resolve_init(init: str) -> Path:
    path = Path(init).expanduser()
    if path.exists():
        return path
    if init in KNOWN_MODELS and KNOWN_MODELS[init].unpack_to:
        try:
            return ensure_model(init)
        except WeightsError as exc:
            # The registry's offline hint names the inference commands' --model; here the
            # folder is given as --init.
            hint = KNOWN_MODELS[init].local_hint
            raise WeightsError(
                str(exc).replace(hint, f"pass --init PATH to a copy of the {init} folder")
            ) from exc
    raise ValueError(f"--init {init}: no such file or folder (or known model: big-lama)")


def run_fit(args: argparse.Namespace) -> int:
    """``lama-train fit``: train, then say where the model is."""
    from lama_model.train.trainer import RunInputError, TrainError, TrainingInterrupted, fit

    config, resume = config_from_args(args)
    try:
        progress = fit(config, resume=resume, progress_bar=getattr(args, "progress", True))
    except TrainingInterrupted as exc:
        print(f"lama-train: {exc}; continue with: lama-train fit --resume --out {args.out}",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except TrainError as exc:
        print(f"lama-train: {first_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, RunInputError) else 1
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"done: {progress.step} steps; model in {config.run_dir} "
              f"(lama-inpaint --model {config.run_dir})")  # fmt: skip
    return 0


def run_masks(args: argparse.Namespace) -> int:
    """``lama-train masks``: write a mask set."""
    import numpy as np
    from PIL import Image

    from lama_model.train.mask_gen import make_mask_generator

    if args.kind not in MASK_KINDS:
        raise ValueError(f"--kind must be one of {', '.join(MASK_KINDS)}")
    if args.size < 8 or args.count < 1:
        raise ValueError("--size must be at least 8 and -n at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = make_mask_generator(args.kind)
    rng = np.random.RandomState(args.seed)
    digits = max(5, len(str(args.count - 1)))
    for i in range(args.count):
        mask = generator(rng, args.size, args.size)
        Image.fromarray((mask > 0.5).astype(np.uint8) * 255, mode="L").save(
            out / f"mask_{i:0{digits}d}.png"
        )
    print(f"wrote {args.count} {args.kind} masks ({args.size}×{args.size}) to {out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """``lama-train eval``: one table of LPIPS, FID, PSNR and SSIM per mask-area bin."""
    from lama_model.devices import DeviceError, resolve_device
    from lama_model.train.evaluate import (
        evaluate_model,
        evaluation_samples,
        format_comparison,
        format_table,
        released_networks,
        write_json,
    )
    from lama_model.weights.checkpoint import load_model, model_source

    if args.size < 8 or args.size % 8:
        raise ValueError("--size must be a multiple of 8 (the generator's stride)")
    # Photos, masks and the report to compare with first: a wrong input fails before anything
    # is loaded or downloaded.
    samples = evaluation_samples(Path(args.data), args.masks, args.size, args.seed)
    about = {"model": str(args.model), "data": str(args.data), "masks": args.masks,
             "size": args.size, "seed": args.seed, "images": len(samples)}  # fmt: skip
    before = _comparable_report(Path(args.compare), about) if args.compare else None
    try:
        device = resolve_device(args.device)
    except DeviceError as exc:
        raise ValueError(str(exc)) from exc
    source = model_source(args.model, args.checkpoint)
    model = load_model(source, device, allow_torchscript=args.allow_torchscript)
    networks = None if args.psnr_ssim_only else released_networks().to(device)
    results = evaluate_model(model, samples, networks, batch_size=max(1, args.batch_size),
                             device=device)  # fmt: skip
    title = (f"{args.model} on {len(samples)} photos of {args.data}, {args.masks} masks, "
             f"{args.size}×{args.size}")  # fmt: skip
    if networks is None:
        title += " (PSNR and SSIM only: not the paper's LPIPS and FID)"
    if before is None:
        print(format_table(results, title))
    else:
        title += f"\nbefore: {before.get('model')} ({args.compare})"
        print(format_comparison(before["results"], results, title))
    if args.json:
        write_json(results, Path(args.json), **about)
    return 0


def _comparable_report(path: Path, about: dict) -> dict:
    """The ``--compare`` report, if it was made on the same photos, masks, size and seed."""
    from lama_model.train.evaluate import SAME_SETUP, read_json

    report = read_json(path)
    differ = [f"{key} {report.get(key)} ≠ {about[key]}" for key in SAME_SETUP
              if report.get(key) != about[key]]  # fmt: skip
    if differ:
        raise ValueError(f"{path} judged other inputs ({', '.join(differ)}): compare like to like")
    return report


def main(argv: list[str] | None = None) -> int:
    """Run ``lama-train``; returns the exit code."""
    args = build_parser().parse_args(argv)
    # After parsing, so that --help never loads torch (the checkpoint code needs it).
    from lama_model.weights.checkpoint import CheckpointError

    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format="lama-train: %(message)s"
    )
    try:
        commands = {"fit": run_fit, "masks": run_masks, "eval": run_eval}
        return commands[args.command](args)
    except (ValueError, ConfigError, CheckpointError) as exc:  # bad input
        print(f"lama-train: {first_line(exc)}", file=sys.stderr)
        return 2
    except WeightsError as exc:
        print(f"lama-train: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lama-train: interrupted (models/last.ckpt holds the last saved step)",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
