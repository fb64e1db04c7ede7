"""A large photo with a small object through the default strategy, and the Krita case.

    python bench/large_photo.py [--object 120] [--threads 2]
    python bench/large_photo.py --krita [--runs 3] [--threads 2]

The automatic strategy runs only a context window around the object through the generator,
so the time depends on the object, not on the photo's 24 megapixels (Big LaMa shape, random
weights, float32 eager model).

``--krita``: what the Krita plug-in sends for a 500×400 selection in a 5640×3172 photo (issue
20): a 1000×900 window, served the default way (``--precision auto``: measured on the first
start, then cached; OpenVINO's paths too when the ``[openvino]`` extra is installed). Prints
the path ``auto`` chose and the seconds per request after a warm-up (target: ≤ 3 s on 2 cores).

``--resize-limit PX [PX ...]`` (with ``--krita``): one row per limit, as the plug-ins'
Processing size sends it (Full 1024, Faster 768, Fastest 512): the size the window's fill is
computed at and the seconds per request, the limits' requests interleaved round by round so a
busy machine slows them alike. ``--model PATH`` serves that checkpoint instead of the seeded
Big LaMa (e.g. the tests' tiny model, to check the script quickly).

    python bench/large_photo.py --krita --resize-limit 1024 768 512 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lama_model.net.generator import build_generator
from lama_model.pipeline import InpaintOptions, inpaint
from lama_model.weights.checkpoint import LamaModel

KRITA_WINDOW = (900, 1000)  # height, width
KRITA_SELECTION = (400, 500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--object", type=int, default=120, help="object size in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--krita", action="store_true", help="the 1000x900 Krita window instead")
    parser.add_argument("--runs", type=int, default=3, help="--krita: timed requests")
    parser.add_argument("--resize-limit", type=int, nargs="+", metavar="PX",
                        default=[InpaintOptions().resize_limit],
                        help="--krita: one row per limit (the plug-ins' Processing size)")
    parser.add_argument("--model", type=Path, help="--krita: this checkpoint, not Big LaMa")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LamaModel(build_generator("big-lama"), name="big-lama-random")
    if args.krita:
        krita_window(_krita_model(args.model), args.runs, args.threads, args.resize_limit)
        return
    photo = np.random.default_rng(0).integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    mask = np.zeros((4000, 6000), np.uint8)
    s = args.object
    mask[2000 : 2000 + s, 3000 : 3000 + s] = 255
    stages: list[str] = []
    start = time.perf_counter()
    result = inpaint(model, photo, mask, InpaintOptions(), lambda _f, stage: stages.append(stage))
    seconds = time.perf_counter() - start
    changed = int((result.alpha > 0).sum())
    windows = stages.count("inpaint")
    print(
        f"6000x4000 photo, {s}x{s} px object, Big LaMa shape, {args.threads} threads: "
        f"{seconds:.2f} s ({windows} window(s), {changed} pixels changed)"
    )


def _krita_model(path: Path | None) -> LamaModel:
    """The checkpoint at ``path``, or bench/speed.py's seeded Big LaMa (its OpenVINO graphs,
    cached by a speed.py run with the same LAMA_CACHE_DIR, are reused here)."""
    if path is not None:
        from lama_model.weights.checkpoint import load_model

        return load_model(path)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed import build_reference

    return build_reference("cpu")


def krita_window(model: LamaModel, runs: int, threads: int, limits: list[int]) -> None:
    """Requests of the Krita case through the default served path, one row per resize limit:
    the size its fill is computed at and the seconds per request."""
    from lama_model.accel.background_choice import BackgroundChoice
    from lama_model.accel.optimize import optimize

    start = time.perf_counter()
    # What lama-server builds with --precision auto; it switches to OpenVINO's path once its
    # background measurement picks it, so the requests here wait for that measurement.
    served = optimize(model, "cpu", background=True)
    if isinstance(served, BackgroundChoice):
        served.wait()
    print(f"start-up (auto, incl. first-start measurement if not cached): "
          f"{time.perf_counter() - start:.1f} s -> {served.description} "
          f"({served.choice.reason if served.choice else ''})", flush=True)  # fmt: skip
    window, mask = _krita_request()
    options = {limit: InpaintOptions(resize_limit=limit) for limit in limits}
    times: dict[int, list[float]] = {limit: [] for limit in limits}
    for round_ in range(runs + 1):  # round 0 compiles each limit's shape: not counted
        for limit in limits:
            t0 = time.perf_counter()
            inpaint(served, window, mask, options[limit])
            if round_:
                times[limit].append(time.perf_counter() - t0)
    height, width = KRITA_WINDOW
    sel_h, sel_w = KRITA_SELECTION
    print(f"Krita case: {width}x{height} window, {sel_w}x{sel_h} selection, {threads} threads, "
          f"{served.description}, median of {runs} (target <= 3 s):")  # fmt: skip
    for limit in limits:
        print(f"  resize limit {limit:>4} px: filled at {_fill_size(mask, options[limit])}, "
              f"{statistics.median(times[limit]):.2f} s per request", flush=True)  # fmt: skip


def _krita_request() -> tuple[np.ndarray, np.ndarray]:
    """The Krita case's window (seeded noise) and its mask (the selection in the middle)."""
    height, width = KRITA_WINDOW
    window = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    sel_h, sel_w = KRITA_SELECTION
    top, left = (height - sel_h) // 2, (width - sel_w) // 2
    mask[top : top + sel_h, left : left + sel_w] = 255
    return window, mask


def _fill_size(mask: np.ndarray, options: InpaintOptions) -> str:
    """The sizes the generator runs at for ``mask`` under ``options``: the pipeline's plan on
    its grown hole, as :mod:`lama_model.pipeline.host` makes them."""
    from lama_model.geometry import blend_weights, bounding_box
    from lama_model.pipeline.options import active_box, plan_windows

    h, w = mask.shape
    active = active_box(bounding_box(mask), options, h, w)
    hole = np.zeros((h, w), dtype=bool)
    hole[active.slices] = blend_weights(mask[active.slices], options.mask_grow, options.feather)[0]
    sizes = [f"{max(1, round(box.width * scale))}x{max(1, round(box.height * scale))}"
             for box, scale in plan_windows(hole, active, options, h, w)]  # fmt: skip
    return " + ".join(sizes)


if __name__ == "__main__":
    main()
