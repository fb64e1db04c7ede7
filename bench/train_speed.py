"""Training throughput of the Big LaMa recipe: images/s per device and peak memory.

    python bench/train_speed.py [--device cpu|cuda] [--batch-size N] [--size 256]
                                [--variants fp32,bf16,bf16_cl,bf16_cl_compile]
                                [--generator big-lama|lama-fourier|small|tiny]
                                [--discriminator bigd|smalld|tinyd]
                                [--resnet-pl-weight 30] [--l1-missing-weight 0]
                                [--steps 10] [--warmup 3] [--json out.json]

    # the laptop recipe of README's "On a laptop, offline": how many steps/s will this CPU do?
    python bench/train_speed.py --generator small --discriminator smalld --size 128 \
        --batch-size 4 --resnet-pl-weight 0 --l1-missing-weight 2 --variants fp32

One full training step as ``lama-train fit`` runs it (``lama_model.train.trainer.TrainStep``:
generator step with l1 + adversarial + feature matching + ResNetPL, then discriminator step
with R1, both Adam with gradient clipping) on the Big LaMa recipe: the big-lama generator
(18 FFC blocks), the ``bigd`` discriminator (ndf 64, 4 layers) and the ADE20k ResNet-50-dilated
encoder with **random weights** (speed does not depend on them), at 256×256 crops with
Big LaMa training masks (by default; the options pick lama-train's other presets and the
offline recipe without ResNetPL). Synthetic images: data loading is not timed.

Variants: ``fp32``; ``fp32_cl`` (channels-last); ``bf16`` (autocast, FFTs stay float32);
``bf16_cl``; ``bf16_cl_compile`` (plus ``torch.compile`` of the generator and ResNetPL).
Each runs in a fresh subprocess so its peak memory is its own (CUDA:
``torch.cuda.max_memory_allocated``; CPU: VmHWM). Images/s is per device (per GPU): the
median over ``--steps`` timed steps after ``--warmup`` steps. Does not import lama_server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "fp32": dict(precision="fp32", channels_last=False, compile=False),
    "fp32_cl": dict(precision="fp32", channels_last=True, compile=False),
    "bf16": dict(precision="bf16", channels_last=False, compile=False),
    "bf16_cl": dict(precision="bf16", channels_last=True, compile=False),
    "bf16_cl_compile": dict(precision="bf16", channels_last=True, compile=True),
}
GENERATORS = ("big-lama", "lama-fourier", "small", "tiny")  # tiny: only to check the script
# the official name of Big LaMa's discriminator (bigd), and lama-train's smaller presets
DISCRIMINATORS = {"bigd": "big", "smalld": "small", "tinyd": "tiny"}


def run_variant(args: argparse.Namespace, variant: str) -> dict:
    """Time one variant in this process."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    step, memory_format = _build_step(args, variant, device)
    batches = _synthetic_batches(args, device, memory_format)
    times, logs = _time_steps(step, batches, args, device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        name = torch.cuda.get_device_name(device)
    else:
        peak = _vmhwm_mib()
        name = "cpu"
    median = statistics.median(times)
    return {
        "variant": variant,
        "device": name,
        "torch": torch.__version__,
        "size": args.size,
        "batch_size": args.batch_size,
        "generator": args.generator,
        "discriminator": args.discriminator,
        "step_s_median": median,
        "images_per_s": args.batch_size / median,
        "peak_mib": peak,
        "finite": bool(all(torch.isfinite(v).all() for v in logs.values())),
    }


def _build_step(args: argparse.Namespace, variant: str, device):
    """The trainer's ``TrainStep`` on the recipe's networks (random weights), and the layout."""
    import torch

    from lama_model.net.generator import FFCResNetGenerator
    from lama_model.train.config import (
        DISCRIMINATOR_PRESETS,
        GENERATOR_PRESETS,
        LossConfig,
        TrainConfig,
    )
    from lama_model.train.discriminator import build_discriminator
    from lama_model.train.perceptual import ResNetPL
    from lama_model.train.trainer import DistEnv, Networks, TrainStep

    discriminator = DISCRIMINATOR_PRESETS[DISCRIMINATORS[args.discriminator]]
    losses = LossConfig(
        resnet_pl_weight=args.resnet_pl_weight, l1_weight_missing=args.l1_missing_weight
    )
    config = TrainConfig(
        data="(synthetic)",
        run_dir="(none)",
        generator=GENERATOR_PRESETS[args.generator],
        discriminator=discriminator,
        losses=losses,
        crop=args.size,
        batch_size=args.batch_size,
        device=args.device,
        **VARIANTS[variant],
    )
    torch.manual_seed(0)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    resnet_pl = None  # --resnet-pl-weight 0: lama-train's offline recipe builds none either
    if losses.resnet_pl_weight > 0:  # the ADE20k encoder's architecture, random weights
        resnet_pl = ResNetPL(weight=losses.resnet_pl_weight).requires_grad_(False)
    nets = Networks(
        generator=FFCResNetGenerator(config.generator),
        discriminator=build_discriminator(ndf=discriminator.ndf, n_layers=discriminator.n_layers),
        resnet_pl=resnet_pl,
    )
    for net in nets.as_dict().values():
        if net is not None:
            net.to(device=device, memory_format=memory_format).train()
    return TrainStep(nets, config, DistEnv(), device), memory_format


def _synthetic_batches(args: argparse.Namespace, device, memory_format) -> list[dict]:
    """Two batches of random images with Big LaMa training masks, already on the device."""
    import numpy as np
    import torch

    from lama_model.train.mask_gen import make_mask_generator

    masks = make_mask_generator("large")
    rng = np.random.RandomState(0)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        image = torch.rand(args.batch_size, 3, args.size, args.size, generator=gen)
        mask = torch.from_numpy(
            np.stack([masks(rng, args.size, args.size) for _ in range(args.batch_size)])
        )[:, None]
        batches.append(
            {
                "image": image.to(device).contiguous(memory_format=memory_format),
                "mask": mask.float().to(device).contiguous(memory_format=memory_format),
            }
        )
    return batches


def _time_steps(step, batches: list[dict], args: argparse.Namespace, device):
    """Seconds per timed step (after the warm-up steps), and the last step's loss logs."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(args.warmup + args.steps):
        sync()
        tic = time.perf_counter()
        logs, _, _ = step(batches[i % 2])
        float(logs["gen_total"])  # one sync, as the trainer does at log time
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - tic)
    return times, logs


def _ensure_lama_model_importable() -> None:
    """Run from a checkout without installing: the package folder ``model/`` is ``lama_model``
    (also when an older installed ``lama_model`` without ``train`` shadows it)."""
    try:
        import lama_model.train  # noqa: F401
    except ImportError:
        import importlib.util

        for name in [n for n in sys.modules if n == "lama_model" or n.startswith("lama_model.")]:
            del sys.modules[name]
        root = Path(__file__).resolve().parent.parent / "model"
        spec = importlib.util.spec_from_file_location(
            "lama_model", root / "__init__.py", submodule_search_locations=[str(root)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["lama_model"] = module
        spec.loader.exec_module(module)


def _vmhwm_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="per device (default 10 on cuda: the official config's "
                        "data.batch_size; 1 on cpu)")  # fmt: skip
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--variants", default="fp32,bf16,bf16_cl,bf16_cl_compile")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--generator", choices=GENERATORS, default="big-lama")
    parser.add_argument("--discriminator", choices=list(DISCRIMINATORS), default="bigd")
    parser.add_argument("--resnet-pl-weight", type=float, default=30.0,
                        help="as lama-train's (30; 0: no perceptual network, the offline recipe)")
    parser.add_argument("--l1-missing-weight", type=float, default=0.0,
                        help="as lama-train's (0; the offline recipe uses 2)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 10 if args.device.startswith("cuda") else 1
    if args.one:
        _ensure_lama_model_importable()
        print("RESULT " + json.dumps(run_variant(args, args.one)), flush=True)
        return 0

    results = []
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant}; known: {', '.join(VARIANTS)}")
        cmd = [sys.executable, __file__, "--one", variant, *_forwarded(args)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            print(f"{variant:>16}: FAILED: {' | '.join(tail)}", flush=True)
            results.append({"variant": variant, "error": " | ".join(tail)})
            continue
        result = json.loads(line[len("RESULT ") :])
        results.append(result)
        print(
            f"{variant:>16}: {result['images_per_s']:8.2f} images/s  "
            f"({result['step_s_median'] * 1000:8.1f} ms/step, batch {result['batch_size']}, "
            f"{result['size']}², peak {result['peak_mib']:.0f} MiB, {result['device']})",
            flush=True,
        )
    base = next((r for r in results if r.get("variant") == "fp32" and "error" not in r), None)
    if base:
        for r in results:
            if "error" not in r and r is not base:
                ratio = r["images_per_s"] / base["images_per_s"]
                print(f"{r['variant']:>16}: ×{ratio:.2f} vs fp32")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all("error" not in r for r in results) else 1


def _forwarded(args: argparse.Namespace) -> list[str]:
    out = ["--device", args.device, "--batch-size", str(args.batch_size), "--size", str(args.size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--generator", args.generator,
           "--discriminator", args.discriminator, "--threads", str(args.threads),
           "--resnet-pl-weight", str(args.resnet_pl_weight),
           "--l1-missing-weight", str(args.l1_missing_weight)]  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main())
