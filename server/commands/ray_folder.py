"""``lama-inpaint --input-dir D --output-dir O --ray [ADDRESS]``: a folder job on a Ray cluster.

Ray Data does the placement, the pool of model actors and the retries; nothing here schedules.
The pipeline is list → (read, inpaint, write) on a pool of actors that each load the model once
→ one status row per image back to the driver, which shows progress and collects failures.
Reading and writing happen inside the actor so pixels never cross the object store twice and a
photo's bytes go from the shared disk straight to the model.

Resumable: a job whose output already exists is skipped. That is safe because every output is
written through a hidden ``.NAME.XXXX.partial`` file renamed onto its final name
(``image_files.write_image``), so a file under a final name is always complete, even after the
job was killed halfway. This module imports nothing from ``inpaint`` (which imports it): the
caller hands it a picklable factory of the per-image function.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# One image's work in an actor: (image, mask, output) paths → None, or raises with a reason.
ImageTask = Callable[[str, str, str], None]
DEFAULT_ACTORS = 2
# A CPU actor asks Ray for a fraction of a core so two fit on a small machine; Torch's own
# thread count, not this number, decides how fast it runs.
ACTOR_CPUS = 0.5


class ModelLoadError(RuntimeError):
    """An actor could not load the model: the whole job stops with this one-line reason."""


@dataclass(frozen=True)
class FolderSummary:
    """What a folder job did: images written, skipped as already complete, and failures."""

    written: int
    skipped: int
    failures: list[tuple[str, str]]  # (image path, one-line reason)


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` ("auto": the one this machine belongs to), start a
    local one (None), or keep the connection this process already has."""
    import ray

    if ray.is_initialized():
        return
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip


class ImageActor:
    """A Ray Data actor: loads the model once (``make_task()``), then does one batch of rows."""

    def __init__(self, make_task: Callable[[], ImageTask]) -> None:
        from lama_model.errors import one_line

        # Raising here would make Ray restart the actor and print every traceback; the reason
        # goes back as a status row instead, and the driver stops the job on it.
        self.task, self.load_error = None, ""
        try:
            self.task = make_task()
        except Exception as exc:
            self.load_error = one_line(exc) or type(exc).__name__

    def __call__(self, batch: dict) -> dict:
        from lama_model.errors import one_line

        if self.task is None:
            return {"image": batch["image"], "error": [""] * len(batch["image"]),
                    "load_error": [self.load_error] * len(batch["image"])}  # fmt: skip
        errors = []
        for image, mask, output in zip(batch["image"], batch["mask"], batch["output"], strict=True):
            try:
                self.task(str(image), str(mask), str(output))
                errors.append("")
            except Exception as exc:  # reported in the summary; the other images go on
                errors.append(one_line(exc) or type(exc).__name__)
        return {"image": batch["image"], "error": errors, "load_error": [""] * len(errors)}


def run_folder(
    jobs: list[tuple[Path, Path, Path]],
    make_task: Callable[[], ImageTask],
    *,
    actors: int = DEFAULT_ACTORS,
    gpus_per_actor: float = 0.0,
    quiet: bool = False,
) -> FolderSummary:
    """Run ``jobs`` (image, mask, output) whose output does not exist yet on a pool of actors.

    Call ``connect`` first. Each row is retried by Ray Data if its actor dies.
    """
    import ray.data

    quiet_ray_data()
    pending = [job for job in jobs if not job[2].exists()]
    skipped = len(jobs) - len(pending)
    if not pending:
        return FolderSummary(0, skipped, [])
    rows = [{"image": str(i), "mask": str(m), "output": str(o)} for i, m, o in pending]
    resources = {"num_gpus": gpus_per_actor} if gpus_per_actor else {"num_cpus": ACTOR_CPUS}
    statuses = ray.data.from_items(rows).map_batches(
        ImageActor, fn_constructor_args=(make_task,), batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=max(1, min(actors, len(pending)))), **resources,
    )  # fmt: skip
    return _collect(statuses, len(pending), skipped, quiet)


def quiet_ray_data() -> None:
    """Our one progress bar and summary instead of Ray Data's per-operator bars and log lines."""
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False


def _collect(statuses, total: int, skipped: int, quiet: bool) -> FolderSummary:
    """Drain the status rows into a progress bar and the failure list."""
    from tqdm import tqdm

    bar = None if quiet else tqdm(total=total, unit="image", file=sys.stderr)
    failures = []
    for row in statuses.iter_rows():
        if row["load_error"]:
            if bar is not None:
                bar.close()
            raise ModelLoadError(row["load_error"])
        if row["error"]:
            failures.append((str(row["image"]), str(row["error"])))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return FolderSummary(total - len(failures), skipped, failures)
