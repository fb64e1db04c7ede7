"""The training loop: the official LaMa step, made fast and resumable, on one process or many.

One optimiser step, as the official Lightning module runs it with two optimisers:

1. **Generator step** — the discriminator's parameters are frozen; predict, compute
   ``l1 + adversarial + feature matching + ResNetPL``, backward, clip the generator's gradient
   norm to ``grad_clip`` (Lightning's ``gradient_clip_val``), Adam step (lr 1e-3).
2. **Discriminator step** — the generator runs again (in train mode, as the official code does,
   so its BatchNorm statistics move twice per step) without gradients; the non-saturating loss
   with R1 penalty, backward, clip, Adam step (lr 1e-4).

Every network stays in train mode, the ResNetPL encoder included (Lightning's ``model.train()``
undoes the official ``impl.eval()``); validation switches the generator to eval mode.

Several processes (``torchrun``): every rank draws its own share of each batch, gradients are
averaged across ranks before clipping — what DDP computes. The average is one explicit
``all_reduce`` of the flattened gradients per optimiser rather than the DDP wrapper, because
the R1 penalty differentiates through ``torch.autograd.grad``, which DDP does not support. As in
the official DDP setup, BatchNorm is per rank (no SyncBN). ``accumulate k`` splits a batch into
``k`` micro-batches the same way ranks split it, so one process with ``accumulate k`` computes
what ``k`` ranks compute.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lama_model.devices import DeviceError, resolve_device
from lama_model.net.generator import FFCResNetGenerator
from lama_model.train import run_state as ckpt
from lama_model.train.config import TrainConfig
from lama_model.train.evaluate import TOTAL, Evaluation, EvaluationNetworks, installed_networks
from lama_model.train.logs import RunLog, preview_grid, save_preview
from lama_model.train.validate import evaluate
from lama_model.weights.checkpoint import CheckpointError

LOG = logging.getLogger(__name__)


#: The offline route when the perceptual loss's encoder cannot be downloaded: no ResNetPL, and a
#: direct L1 signal inside the hole instead (README's "On a laptop, offline").
WITHOUT_RESNET_PL = "--resnet-pl-weight 0 --l1-missing-weight 2"


class TrainError(RuntimeError):
    """A run cannot start or continue; the message says why."""


class RunInputError(TrainError):
    """What the user gave cannot be trained on (no photos, no run to resume, unusable weights)."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_environ() -> DistEnv:
        return DistEnv(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )


def training_device(name: str, env: DistEnv) -> torch.device:
    """The device this rank trains on: :func:`lama_model.devices.resolve_device`, where a bare
    ``cuda`` is this rank's GPU (``LOCAL_RANK``), made current so that NCCL uses it."""
    try:
        device = resolve_device(name)
    except DeviceError as exc:
        raise TrainError(str(exc)) from exc
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    return device


class TinyRandomEncoderForTests(nn.Module):
    """NOT a perceptual network: a 4-stage random conv stack with ResNetPL's output interface.

    Selected only by ``perceptual_encoder: tiny-random-for-tests`` so that the test suite can run
    the whole training step in seconds; real runs use the ADE20k ResNet-50.
    """

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        chans = [3, width, width * 2, width * 2, width * 4]
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=2 if i < 2 else 1, padding=1),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=False),
            )
            for i in range(4)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


@dataclass
class Networks:
    generator: FFCResNetGenerator
    discriminator: nn.Module
    resnet_pl: nn.Module | None

    def as_dict(self) -> dict[str, nn.Module | None]:
        return {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "loss_resnet_pl": self.resnet_pl,
        }


def build_networks(
    config: TrainConfig,
    init_state: dict[str, dict[str, torch.Tensor]] | None = None,
    resume: bool = False,
) -> Networks:
    """Build G, D and the perceptual loss; weights from ``init_state`` where it has them.

    Fine-tuning (``resume`` False) takes the generator strictly and the discriminator and
    perceptual encoder when they fit; resuming takes all three strictly. The same seed on every
    rank gives the same initial weights (rank 0's are broadcast too).
    """
    from lama_model.train.discriminator import build_discriminator
    from lama_model.train.perceptual import ResNetPL

    torch.manual_seed(config.seed)
    generator = FFCResNetGenerator(config.generator)
    discriminator = build_discriminator(
        ndf=config.discriminator.ndf, n_layers=config.discriminator.n_layers
    )
    init_state = init_state or {}
    if resume:
        ckpt.load_strict(generator, init_state.get("generator", {}), "generator")
        ckpt.load_strict(discriminator, init_state.get("discriminator", {}), "discriminator")
    elif init_state.get("generator"):
        ckpt.load_strict(generator, init_state["generator"], "generator")
        if not _load_optional(discriminator, init_state.get("discriminator"), "discriminator"):
            LOG.warning("the discriminator starts from scratch")

    resnet_pl = None
    if config.losses.resnet_pl_weight > 0:
        saved = init_state.get("loss_resnet_pl")
        use_saved = bool(saved) and (resume or config.resnet_pl is None)
        encoder = _perceptual_encoder(config, have_saved=use_saved)
        resnet_pl = ResNetPL(weight=config.losses.resnet_pl_weight, encoder=encoder)
        if resume:
            ckpt.load_strict(resnet_pl, saved or {}, "loss_resnet_pl")
        elif use_saved and not _load_optional(resnet_pl, saved, "loss_resnet_pl"):
            # The saved entries are unusable (another encoder): take the real weights instead.
            encoder = _perceptual_encoder(config, have_saved=False)
            resnet_pl = ResNetPL(weight=config.losses.resnet_pl_weight, encoder=encoder)
        for p in resnet_pl.parameters():
            p.requires_grad_(False)
    return Networks(generator, discriminator, resnet_pl)


def _load_optional(module: nn.Module, state: dict | None, what: str) -> bool:
    """Load weights a fine-tuning source may lack or hold in another shape; False if not."""
    if not state:
        LOG.warning("the initial checkpoint has no %s weights", what)
        return False
    try:
        ckpt.load_strict(module, state, what)
    except CheckpointError as exc:
        LOG.warning("not using the initial checkpoint's %s: %s", what, exc)
        return False
    return True


def _perceptual_encoder(config: TrainConfig, have_saved: bool) -> nn.Module | None:
    if config.perceptual_encoder == "tiny-random-for-tests":
        return TinyRandomEncoderForTests()
    from lama_model.train.perceptual import load_resnet_pl_encoder

    if have_saved:
        return None  # ResNetPL builds the ADE20k architecture; the weights follow from the ckpt
    if config.resnet_pl is not None:
        return load_resnet_pl_encoder(config.resnet_pl)
    from lama_model.weights.downloads import WeightsError, ensure_model

    try:
        path = ensure_model("ade20k-resnet50dilated")
    except WeightsError as exc:
        # Where the encoder cannot be had (offline), the documented route is to train without it.
        raise TrainError(
            f"{exc} Or train without the perceptual loss: {WITHOUT_RESNET_PL} "
            "(not the paper's recipe; see lama-train fit --help)"
        ) from exc
    return load_resnet_pl_encoder(path)


class GradientAverager:
    """Average gradients over micro-batches and ranks, then clip: the DDP result, exactly.

    Each micro-batch's loss is backpropagated unscaled, so ``.grad`` holds the sum over this
    rank's micro-batches; ranks add their sums with one ``all_reduce``; the total is divided by
    the number of micro-batches in the whole step. One rank with ``k`` micro-batches and ``k``
    ranks with one each perform the same additions in the same order.
    """

    def __init__(self, params: list[nn.Parameter], env: DistEnv, micro_batches: int) -> None:
        self.params = params
        self.env = env
        self.divisor = float(micro_batches * env.world_size)

    def __call__(self, clip: float) -> torch.Tensor:
        grads = []
        for p in self.params:
            if p.grad is None:  # DDP reduces zeros for parameters a step did not use
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        if self.env.world_size > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        if self.divisor != 1:
            for g in grads:
                g.div_(self.divisor)
        return torch.nn.utils.clip_grad_norm_(self.params, clip)


def micro_batches(batch: dict[str, torch.Tensor], k: int) -> list[dict[str, torch.Tensor]]:
    """Split a batch as DistributedSampler splits an epoch across ``k`` ranks: samples r, r+k, …"""
    if k == 1:
        return [batch]
    return [{name: t[r::k] for name, t in batch.items()} for r in range(k)]


class TrainStep:
    """One optimiser step of both networks on a batch (the part a benchmark times).

    Owns the two Adam optimisers, the gradient averaging, autocast and the compiled forwards.
    """

    def __init__(self, nets: Networks, config: TrainConfig, env: DistEnv, device: torch.device):
        from lama_model.train.losses import LossWeights

        self.nets = nets
        self.config = config
        self.device = device
        self.g_opt = torch.optim.Adam(nets.generator.parameters(), lr=config.generator_lr)
        self.d_opt = torch.optim.Adam(nets.discriminator.parameters(), lr=config.discriminator_lr)
        self.weights = LossWeights(
            l1_known=config.losses.l1_weight_known,
            l1_missing=config.losses.l1_weight_missing,
            adversarial=config.losses.adversarial_weight,
            r1_gamma=config.losses.gp_coef,
            feature_matching=config.losses.feature_matching_weight,
            resnet_pl=config.losses.resnet_pl_weight,
        )
        if config.compile:
            # Compiled in place (state_dict keys unchanged). The discriminator stays eager:
            # the R1 penalty needs double backward, which compiled graphs do not support.
            nets.generator.compile()
            if nets.resnet_pl is not None:
                nets.resnet_pl.impl.compile()
        self.bf16 = config.precision == "bf16"
        self.g_avg = GradientAverager(list(nets.generator.parameters()), env, config.accumulate)
        self.d_avg = GradientAverager(list(nets.discriminator.parameters()), env, config.accumulate)

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.g_opt, "discriminator": self.d_opt}

    def load_optimizer_states(self, saved: dict) -> None:
        names = saved.get("optimizer_names", ["generator", "discriminator"])
        states = dict(zip(names, saved["optimizer_states"], strict=True))
        self.g_opt.load_state_dict(states["generator"])
        self.d_opt.load_state_dict(states["discriminator"])

    def _autocast(self):
        if not self.bf16:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def __call__(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]], torch.Tensor]:
        """Generator step, then discriminator step. Returns the step's mean loss components
        (tensors; no device sync), the micro-batches, and the last prediction."""
        from lama_model.train.losses import discriminator_losses, generator_losses, predict

        nets, config = self.nets, self.config
        parts = micro_batches(batch, config.accumulate)
        logs_sum: dict[str, torch.Tensor] = {}

        # 1. generator step (D frozen; gradients flow through D into the prediction)
        nets.discriminator.requires_grad_(False)
        self.g_opt.zero_grad(set_to_none=True)
        last_pred = None
        for part in parts:
            with self._autocast():
                pred = predict(nets.generator, part["image"], part["mask"])
                total, logs = generator_losses(
                    part["image"], part["mask"], pred, nets.discriminator, nets.resnet_pl,
                    self.weights,
                )  # fmt: skip
            total.backward()
            _add_logs(logs_sum, {"gen_total": total, **logs})
            last_pred = pred.detach()
        self.g_avg(config.grad_clip)
        self.g_opt.step()
        nets.discriminator.requires_grad_(True)

        # 2. discriminator step (G reruns in train mode, without gradients)
        self.d_opt.zero_grad(set_to_none=True)
        for part in parts:
            with self._autocast():
                with torch.no_grad():
                    pred = predict(nets.generator, part["image"], part["mask"])
                total, logs = discriminator_losses(
                    part["image"], part["mask"], pred.detach(), nets.discriminator, self.weights
                )
            total.backward()
            _add_logs(logs_sum, logs)
        self.d_avg(config.grad_clip)
        self.d_opt.step()
        means = {k: v / len(parts) for k, v in logs_sum.items()}
        return means, parts, last_pred


class CtrlC:
    """While active, the first Ctrl-C (SIGINT) asks the loop to stop after the current step, so
    that the run saves a checkpoint ``--resume`` continues; a second one interrupts at once.

    Only in a single process, on the main thread: under ``torchrun`` the launcher handles Ctrl-C,
    and ranks stopping on their own would leave the others waiting in an ``all_reduce``.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = signal.default_int_handler

    def __enter__(self) -> CtrlC:
        previous = signal.getsignal(signal.SIGINT) if self.enabled else None
        if previous is signal.SIG_IGN:  # started deaf to Ctrl-C (nohup, a background job): stay so
            self.enabled = False
        elif self.enabled:
            self._previous = previous if previous is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, self._request)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C interrupts at once


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run between two steps; ``checkpoint`` holds the last finished one."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted after step {step}; {checkpoint} holds it")
        self.step = step
        self.checkpoint = checkpoint


class LossWindow:
    """The loss components summed over the steps since the last ``train.csv`` row, timed."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.tic = time.perf_counter()

    def add(self, logs: dict[str, torch.Tensor]) -> None:
        for key, value in logs.items():
            self.sums[key] = self.sums.get(key, 0) + value
        self.steps += 1

    def close(self, images_per_step: int) -> tuple[dict[str, float], float]:
        """Each component's mean and the images per second; the next window starts now."""
        means = {k: float(v) / self.steps for k, v in self.sums.items()}
        elapsed = time.perf_counter() - self.tic
        images_per_s = self.steps * images_per_step / max(elapsed, 1e-9)
        self.start()
        return means, images_per_s


@dataclass
class TrainingRun:
    """What one ``fit`` works with, set up once: networks, the step, data, logs, progress."""

    nets: Networks
    step_fn: TrainStep
    progress: ckpt.Progress
    batches: Iterator[dict]
    val_set: list
    device: torch.device
    memory_format: torch.memory_format
    run_log: RunLog | None  # rank 0 only
    bar: Any  # a tqdm bar on rank 0 unless --no-progress
    window: LossWindow = field(default_factory=LossWindow)

    def to_device(self, batch: dict) -> dict[str, torch.Tensor]:
        return {
            k: batch[k].to(self.device, non_blocking=True).contiguous(
                memory_format=self.memory_format
            )
            for k in ("image", "mask")
        }


class Trainer:
    """Runs one training run described by a :class:`TrainConfig` (``fit``)."""

    def __init__(
        self, config: TrainConfig, resume: bool = False, progress_bar: bool = True
    ) -> None:
        self.config = config
        self.resume = resume
        self.progress_bar = progress_bar
        self.env = DistEnv.from_environ()
        self.run_dir = Path(config.run_dir)
        self.images_per_step = config.batch_size * config.accumulate * self.env.world_size
        self.judges: EvaluationNetworks | None = None  # set up by fit where installed

    def fit(self) -> ckpt.Progress:
        """Train to ``config.steps``; returns the final progress. Rank 0 writes the run folder.

        Ctrl-C (one process) stops after the current step with ``models/last.ckpt`` saved and
        raises :class:`TrainingInterrupted`.
        """
        device = training_device(self.config.device, self.env)
        started_group = self._init_distributed(device)
        try:
            run = self._set_up(device)
            with CtrlC(enabled=self.env.world_size == 1) as ctrl_c:
                finished = self._train(run, ctrl_c)
            if not finished:
                self._save_last(run)
            self._finish(run)
            if not finished:
                raise TrainingInterrupted(run.progress.step, ckpt.last_path(self.run_dir))
            return run.progress
        finally:
            if started_group:
                dist.destroy_process_group()

    # -- set-up -----------------------------------------------------------------------------

    def _init_distributed(self, device: torch.device) -> bool:
        if self.env.world_size == 1 or dist.is_initialized():
            return False
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return True

    def _set_up(self, device: torch.device) -> TrainingRun:
        config, env = self.config, self.env
        try:
            init_state, saved = self._starting_state()
        except CheckpointError as exc:
            raise RunInputError(str(exc)) from exc
        if env.world_size > 1:  # every rank must agree before anything is written
            dist.barrier()
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.run_dir / "config.yaml")
        # Photos first: a wrong folder fails before any weights are downloaded or built.
        loader, val_set = self._data(int(saved["global_step"]) if saved is not None else 0)
        try:
            nets = build_networks(config, init_state, resume=self.resume)
        except CheckpointError as exc:
            raise RunInputError(str(exc)) from exc
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self._place(nets, device, memory_format)
        step_fn = TrainStep(nets, config, env, device)
        progress = ckpt.Progress()
        if saved is not None:
            step_fn.load_optimizer_states(saved)
            about = saved.get("lama_train", {})
            progress = ckpt.Progress(
                step=int(saved["global_step"]),
                best_val_ssim=float(about.get("best_val_ssim", -math.inf)),
                best_score=float(about.get("best_score", about.get("best_val_ssim", -math.inf))),
                best_metric=str(about.get("best_metric", ckpt.MONITOR_SSIM)),
            )
        self.judges = self._judges(device) if env.is_main and val_set else None
        return TrainingRun(
            nets=nets, step_fn=step_fn, progress=progress, batches=_forever(loader),
            val_set=val_set, device=device, memory_format=memory_format,
            run_log=self._run_log(saved) if env.is_main else None,
            bar=self._progress_bar(progress.step),
        )  # fmt: skip

    def _run_log(self, saved: dict | None) -> RunLog:
        resumed_at = int(saved["global_step"]) if saved is not None else None
        return RunLog(self.run_dir, resumed_at=resumed_at)

    def _starting_state(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict | None]:
        """Weights to start from, and the full checkpoint when resuming."""
        if self.resume:
            path = ckpt.last_path(self.run_dir)
            if not path.is_file():
                raise RunInputError(f"{self.run_dir}: nothing to resume (no models/last.ckpt)")
            saved = ckpt.read_checkpoint(path)
            if int(saved["global_step"]) > self.config.steps:
                raise RunInputError(
                    f"{self.run_dir} is at step {saved['global_step']}; --steps "
                    f"{self.config.steps} would go back (give --steps above it)"
                )
            return ckpt.split_state(saved["state_dict"]), saved
        if ckpt.last_path(self.run_dir).is_file():
            raise RunInputError(
                f"{self.run_dir} already holds a run; continue it with --resume or choose "
                "another --out"
            )
        if self.config.init_from:
            path = ckpt.init_checkpoint_path(self.config.init_from)
            return ckpt.split_state(ckpt.read_checkpoint(path)["state_dict"]), None
        return {}, None

    def _data(self, start_step: int) -> tuple[Any, list]:
        """The training loader (continuing at ``start_step``) and rank 0's validation set."""
        from lama_model.train.data import make_train_loader, make_validation_set

        config, env = self.config, self.env
        try:
            loader = make_train_loader(
                config.data,
                crop=config.crop,
                batch_size=config.batch_size * config.accumulate,
                workers=config.workers,
                seed=config.seed,
                rank=env.rank,
                world_size=env.world_size,
                mask_kind=config.mask_kind,
                augment=config.augment,
                max_side=config.max_side,
                start_step=start_step,
            )
            val_set = (
                make_validation_set(
                    config.val_data or config.data,
                    size=config.val_size,
                    count=config.val_count,
                    seed=config.seed,
                )
                if env.is_main
                else []
            )
        except (ValueError, OSError) as exc:  # no photos, unreadable folder, bad mask kind
            raise RunInputError(str(exc)) from exc
        return loader, val_set

    def _place(
        self, nets: Networks, device: torch.device, memory_format: torch.memory_format
    ) -> None:
        """Move the networks to ``device`` in train mode; ranks start from rank 0's weights."""
        for net in nets.as_dict().values():
            if net is not None:
                net.to(device=device, memory_format=memory_format).train()
        if self.env.world_size > 1:
            for net in nets.as_dict().values():
                for tensor in [*net.parameters(), *net.buffers()] if net is not None else []:
                    dist.broadcast(tensor.data, src=0)

    # -- the loop ---------------------------------------------------------------------------

    def _train(self, run: TrainingRun, ctrl_c: CtrlC) -> bool:
        """Step to ``config.steps`` (True), or until Ctrl-C asks to stop (False)."""
        if self.env.is_main and run.progress.step == 0:
            # Before the first step, as Lightning's sanity validation: the run's baseline.
            self._validate(run, save_best=False)
            run.nets.generator.train()
        while run.progress.step < self.config.steps:
            if ctrl_c.requested:
                return False
            step_logs, parts, last_pred = run.step_fn(run.to_device(next(run.batches)))
            run.progress.step += 1
            if self.env.is_main:  # rank 0 logs its own share, as Lightning does without sync_dist
                self._after_step(run, step_logs, parts[-1], last_pred)
        return True

    def _after_step(
        self,
        run: TrainingRun,
        step_logs: dict[str, torch.Tensor],
        last: dict[str, torch.Tensor],
        last_pred: torch.Tensor,
    ) -> None:
        """Rank 0's periodic work: a ``train.csv`` row, a preview, validation, ``last.ckpt``."""
        config, step = self.config, run.progress.step
        run.window.add(step_logs)
        if run.bar is not None:
            run.bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            self._log_train(run)
        if step % config.preview_every == 0 or step == config.steps:
            grid = preview_grid(last["image"], last["mask"], last_pred)
            save_preview(self.run_dir / "samples" / f"step_{step:07d}.png", grid)
        if step % config.val_every == 0 or step == config.steps:
            self._validate(run)
        if step % config.save_every == 0 or step == config.steps:
            self._save_last(run)

    def _log_train(self, run: TrainingRun) -> None:
        step = run.progress.step
        means, images_per_s = run.window.close(self.images_per_step)
        run.run_log.log_train(
            step, means, images=step * self.images_per_step, images_per_s=images_per_s
        )
        if run.bar is not None:
            run.bar.set_postfix(
                l1=f"{means.get('gen_l1', 0):.3f}", gen=f"{means['gen_total']:.3f}",
                discr=f"{means.get('discr_adv', 0):.3f}",
            )  # fmt: skip
        else:  # no bar (--no-progress, output to a file): the same news as one line per row
            steps_per_s = images_per_s / self.images_per_step
            LOG.info("step %d/%d: l1 %.3f, gen %.3f, discr %.3f; %.3g steps/s, %s", step,
                     self.config.steps, means.get("gen_l1", 0), means["gen_total"],
                     means.get("discr_adv", 0), steps_per_s,
                     time_left(self.config.steps - step, steps_per_s))  # fmt: skip

    def _judges(self, device: torch.device) -> EvaluationNetworks | None:
        """The official evaluator's networks, for best.ckpt by ssim_fid100_f1, if installed."""
        from lama_model.weights.downloads import WeightsError

        try:
            networks = installed_networks()
        except WeightsError as exc:
            raise RunInputError(str(exc)) from exc
        if networks is None:
            LOG.warning("best.ckpt is chosen by validation SSIM alone: the FID network is not "
                        "installed (`lama-train eval` downloads it once)")  # fmt: skip
            return None
        return networks.to(device)

    def _validate(self, run: TrainingRun, save_best: bool = True) -> None:
        if not run.val_set:
            return
        progress = run.progress
        dtype = torch.bfloat16 if self.config.precision == "bf16" else None
        judge = Evaluation(self.judges) if self.judges is not None else None
        metrics = evaluate(
            run.nets.generator, run.val_set, run.device, autocast_dtype=dtype,
            l1_weight_known=self.config.losses.l1_weight_known,
            l1_weight_missing=self.config.losses.l1_weight_missing, judge=judge,
        )  # fmt: skip
        if judge is not None:  # the official evaluator's SSIM (zero-padded) is what it combines
            total = judge.results()[TOTAL]
            metrics.update({k: total[k] for k in ("lpips", "fid", "ssim_fid100_f1")})
            metrics["evaluator_ssim"] = total["ssim"]
        run.run_log.log_val(progress.step, metrics)
        LOG.info("step %d: validation PSNR %.2f dB, SSIM %.4f", progress.step,
                 metrics["psnr"], metrics["ssim"])  # fmt: skip
        if save_best:
            self._keep_best(run, metrics)

    def _keep_best(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        """best.ckpt by the official monitor where FID is known, else by SSIM."""
        progress = run.progress
        metric = ckpt.MONITOR_F1 if "ssim_fid100_f1" in metrics else ckpt.MONITOR_SSIM
        score = metrics["ssim_fid100_f1" if metric == ckpt.MONITOR_F1 else "ssim"]
        # a value of another monitor (the networks were installed since) is no yardstick
        best = progress.best_score if progress.best_metric == metric else -math.inf
        if score > best or not ckpt.best_path(self.run_dir).is_file():
            progress.best_val_ssim = max(progress.best_val_ssim, metrics["ssim"])
            progress.best_score, progress.best_metric = score, metric
            ckpt.save_checkpoint(
                ckpt.best_path(self.run_dir), run.nets.as_dict(), run.step_fn.optimizers, progress
            )
            ckpt.write_best_note(self.run_dir, progress.step, metrics, metric)

    def _save_last(self, run: TrainingRun) -> None:
        if self.env.is_main:
            ckpt.save_checkpoint(
                ckpt.last_path(self.run_dir), run.nets.as_dict(), run.step_fn.optimizers,
                run.progress,
            )  # fmt: skip

    def _finish(self, run: TrainingRun) -> None:
        if run.bar is not None:
            run.bar.close()
        if run.run_log is not None:
            run.run_log.close()
        if self.env.world_size > 1:
            dist.barrier()

    def _progress_bar(self, start: int):
        if not (self.progress_bar and self.env.is_main):
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.config.steps, initial=start, unit="step", desc=self.run_dir.name,
            dynamic_ncols=True,
        )  # fmt: skip


def time_left(steps: int, steps_per_s: float) -> str:
    """``"about 1 h 05 min left"`` for ``steps`` more at ``steps_per_s`` (the last row's pace)."""
    if steps <= 0:
        return "done"
    minutes = round(steps / max(steps_per_s, 1e-9) / 60)
    if minutes < 1:
        return "under a minute left"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes:02d} min left" if hours else f"about {minutes} min left"


def _add_logs(into: dict[str, torch.Tensor], logs: dict[str, torch.Tensor]) -> None:
    for key, value in logs.items():
        value = value.detach().float()
        into[key] = into[key] + value if key in into else value


def _forever(loader) -> Iterator[dict]:
    """Batches without end: the loader's sampler carries on across epochs."""
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise TrainError("the training folder yields no batches (fewer images than a batch?)")


def fit(config: TrainConfig, resume: bool = False, progress_bar: bool = True) -> ckpt.Progress:
    """Train (or continue) the run ``config`` describes."""
    return Trainer(config, resume=resume, progress_bar=progress_bar).fit()
