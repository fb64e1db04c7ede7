"""``lama-train fit`` end to end on a tiny model: it learns, writes the official run layout that
``lama-inpaint`` serves, resumes bit for bit, and fine-tunes from a release-layout folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN_ARGS
from PIL import Image

from lama_model.train.cli import main as lama_train
from lama_model.weights.checkpoint import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def fit(photos: Path, out: Path, *extra: str) -> None:
    code = lama_train(["fit", str(photos), "--out", str(out), *TINY_TRAIN_ARGS, *extra])
    assert code == 0


def read_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def tiny_run(train_photos, tmp_path_factory) -> Path:
    """40 steps of the tiny recipe from scratch, validated before and after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("runs") / "tiny"
    fit(train_photos, run, "--steps", "40")
    torch.set_num_threads(before)
    return run


def generator_objective(photos: Path, nets) -> float:
    """L1 + perceptual terms of the generator loss on fixed images and masks (train mode, as
    in training): the terms whose targets do not move with the discriminator."""
    from lama_model.train.data import make_validation_set
    from lama_model.train.losses import LossWeights, generator_losses, predict

    samples = make_validation_set(photos, size=64, count=8, seed=7)
    image = torch.stack([s["image"] for s in samples])
    mask = torch.stack([s["mask"] for s in samples])
    for net in nets.as_dict().values():
        net.train()
    with torch.no_grad():
        pred = predict(nets.generator, image, mask)
        _, logs = generator_losses(image, mask, pred, nets.discriminator, nets.resnet_pl,
                                   LossWeights())  # fmt: skip
    return float(logs["gen_l1"] + logs["gen_resnet_pl"])


def test_training_lowers_the_loss(tiny_run, train_photos):
    from lama_model.train import run_state as checkpoints
    from lama_model.train.config import TrainConfig
    from lama_model.train.trainer import build_networks

    with (tiny_run / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    for name in ("gen_total", "gen_l1", "gen_adv", "gen_fm", "gen_resnet_pl", "discr_adv",
                 "adv_discr_real_out", "adv_discr_fake_out", "adv_discr_real_gp"):  # fmt: skip
        assert np.isfinite([float(r[name]) for r in rows]).all(), name
    # Per-step losses swing with each batch's hole sizes; on fixed images and masks the
    # objective clearly falls. The run's own builder and config give back its step-0 networks.
    config = TrainConfig.load(tiny_run / "config.yaml")
    torch.set_num_threads(1)
    start = generator_objective(train_photos, build_networks(config))
    saved = checkpoints.read_checkpoint(tiny_run / "models" / "last.ckpt")
    trained = build_networks(config, checkpoints.split_state(saved["state_dict"]), resume=True)
    end = generator_objective(train_photos, trained)
    assert end < 0.85 * start, (start, end)  # measured: 85.4 → 62.3
    with (tiny_run / "val.csv").open() as f:
        val = [int(r["step"]) for r in csv.DictReader(f)]
    assert val == [0, 40]  # a baseline before the first step, and the end


def test_run_folder_has_the_official_layout(tiny_run):
    import yaml

    from lama_model.train.config import TrainConfig

    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert config["generator"]["kind"] == "ffc_resnet" and config["generator"]["ngf"] == 16
    assert config["discriminator"] == {"kind": "pix2pixhd_nlayer", "input_nc": 3, "ndf": 8,
                                       "n_layers": 2}  # fmt: skip
    assert config["optimizers"]["generator"] == {"kind": "adam", "lr": 0.001}
    assert config["optimizers"]["discriminator"] == {"kind": "adam", "lr": 0.0001}
    assert config["trainer"]["kwargs"]["gradient_clip_val"] == 1.0
    losses = config["losses"]
    assert (losses["l1"]["weight_known"], losses["l1"]["weight_missing"]) == (10, 0)
    assert (losses["adversarial"]["weight"], losses["adversarial"]["gp_coef"]) == (10, 0.001)
    assert losses["feature_matching"]["weight"] == 100 and losses["resnet_pl"]["weight"] == 30
    loaded = TrainConfig.load(tiny_run / "config.yaml")
    assert loaded.to_yaml_dict() == config  # the file round-trips
    for name in ("last.ckpt", "best.ckpt"):
        saved = read_ckpt(tiny_run / "models" / name)  # weights_only: tensors and containers
        prefixes = {key.split(".", 1)[0] for key in saved["state_dict"]}
        assert prefixes == {"generator", "discriminator", "loss_resnet_pl"}
        assert saved["global_step"] == 40
        assert len(saved["optimizer_states"]) == 2
    with (tiny_run / "val.csv").open() as f:
        val = list(csv.DictReader(f))
    assert int(val[-1]["step"]) == 40
    assert 5 < float(val[-1]["psnr"]) < 60 and 0 < float(val[-1]["ssim"]) <= 1
    grid = Image.open(sorted((tiny_run / "samples").glob("step_*.png"))[-1])
    assert grid.width == 4 * 64 + 3 * 2  # masked input | output | inpainted | target


def test_lama_inpaint_serves_the_trained_run(tiny_run, tmp_path):
    model = load_model(tiny_run)
    best = read_ckpt(tiny_run / "models" / "best.ckpt")["state_dict"]
    for key, value in model.generator.state_dict().items():
        assert torch.equal(value, best[f"generator.{key}"]), key

    rng = np.random.RandomState(1)
    Image.fromarray((rng.rand(72, 88, 3) * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    mask = np.zeros((72, 88), np.uint8)
    mask[20:44, 30:60] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    # lama-inpaint's own entry point (in-process: one interpreter start less on a slow CI box).
    from lama_server.commands.inpaint import main as lama_inpaint

    code = lama_inpaint([str(tmp_path / "photo.png"), str(tmp_path / "mask.png"), "-o",
                         str(tmp_path / "out.png"), "--model", str(tiny_run), "--device", "cpu"])  # fmt: skip
    assert code == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (72, 88, 3)
    src = np.asarray(Image.open(tmp_path / "photo.png"))
    assert not np.array_equal(out[24:40, 34:56], src[24:40, 34:56])  # the hole was filled


def test_resume_continues_bit_for_bit(train_photos, tmp_path):
    """8 steps straight == 4 steps, then --resume to 8 (weights, BN statistics, Adam state)."""
    loader = ("--workers", "1")  # decoding in a worker process, as real runs do
    fit(train_photos, tmp_path / "straight", "--steps", "8", *loader)
    fit(train_photos, tmp_path / "split", "--steps", "4", *loader)
    code = lama_train(["fit", "--resume", "--out", str(tmp_path / "split"), "--steps", "8",
                       "--workers", "1", "--no-progress"])  # fmt: skip
    assert code == 0
    a = read_ckpt(tmp_path / "straight" / "models" / "last.ckpt")
    b = read_ckpt(tmp_path / "split" / "models" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 8
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for index, state in opt_a["state"].items():
            for name, value in state.items():
                assert torch.equal(value, opt_b["state"][index][name]), (index, name)
    # And the run did move: 8 steps differ from 4.
    four = read_ckpt(tmp_path / "split" / "models" / "best.ckpt")  # validated at step 4
    assert four["global_step"] == 4
    assert not torch.equal(
        four["state_dict"]["generator.model.1.ffc.convl2l.weight"],
        a["state_dict"]["generator.model.1.ffc.convl2l.weight"],
    )


def test_fine_tunes_from_a_release_layout_folder(train_photos, tiny_model_dir, tmp_path):
    """--init takes the golden tiny-lama folder (official layout); with lr 0 the generator's
    weights stay exactly the released ones, so they were really loaded."""
    fit(train_photos, tmp_path / "ft", "--init", str(tiny_model_dir), "--steps", "2",
        "--lr-generator", "0")  # fmt: skip
    released = read_ckpt(tiny_model_dir / "models" / "best.ckpt")["state_dict"]
    tuned = read_ckpt(tmp_path / "ft" / "models" / "last.ckpt")["state_dict"]
    generator = load_model(tiny_model_dir).generator
    for name, _ in generator.named_parameters():
        key = f"generator.{name}"
        assert torch.equal(tuned[key], released[key]), key


def test_fine_tunes_from_one_of_our_runs(train_photos, tiny_run, tmp_path):
    fit(train_photos, tmp_path / "ft2", "--init", str(tiny_run), "--steps", "2",
        "--lr-generator", "0", "--lr-discriminator", "0")  # fmt: skip
    start = read_ckpt(tiny_run / "models" / "best.ckpt")["state_dict"]
    tuned = read_ckpt(tmp_path / "ft2" / "models" / "last.ckpt")["state_dict"]
    params = [k for k in start if k.endswith((".weight", ".bias"))]
    assert any(k.startswith("discriminator.") for k in params)
    for key in params:  # G and D both taken from the run (lr 0 keeps them)
        assert torch.equal(tuned[key], start[key]), key


def test_validation_metrics_match_their_definitions():
    from lama_model.train.validate import psnr, ssim

    a = torch.full((1, 3, 32, 32), 0.3)
    b = torch.full((1, 3, 32, 32), 0.4)
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    # Constant images: no variance, so SSIM reduces to the luminance term (2ab+C1)/(a²+b²+C1).
    c1 = 0.01**2
    assert ssim(a, b).item() == pytest.approx((2 * 0.3 * 0.4 + c1) / (0.09 + 0.16 + c1), rel=1e-5)
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert ssim(noise, noise).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(noise, noise.flip(-1)).item() < 0.2


def test_bf16_channels_last_steps_run_on_cpu(train_photos, tmp_path):
    fit(train_photos, tmp_path / "bf16", "--steps", "2", "--precision", "bf16", "--channels-last")
    saved = read_ckpt(tmp_path / "bf16" / "models" / "last.ckpt")["state_dict"]
    assert all(v.dtype != torch.bfloat16 for v in saved.values())  # master weights stay fp32
    with (tmp_path / "bf16" / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and np.isfinite([float(r["gen_total"]) for r in rows]).all()


def test_fine_tuning_reuses_the_checkpoints_perceptual_encoder_offline(
    train_photos, tmp_path, monkeypatch
):
    """A run with the real ADE20k architecture (random weights from --resnet-pl) stores the
    encoder as loss_resnet_pl.impl.*, like the release; fine-tuning from it needs no download."""
    from lama_model.train.perceptual import DilatedResNet50

    torch.manual_seed(3)
    encoder_file = tmp_path / "encoder_epoch_20.pth"
    torch.save(DilatedResNet50().state_dict(), encoder_file)
    real_pl = [a for a in TINY_TRAIN_ARGS if a not in ("--perceptual-encoder", "tiny-random-for-tests")]
    base = ["fit", str(train_photos), *real_pl, "--steps", "1", "--val-count", "1"]
    assert lama_train([*base, "--out", str(tmp_path / "a"), "--resnet-pl", str(encoder_file)]) == 0
    monkeypatch.setenv("LAMA_OFFLINE", "1")
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert lama_train([*base, "--out", str(tmp_path / "b"), "--init", str(tmp_path / "a")]) == 0
    original = torch.load(encoder_file, weights_only=True)
    tuned = read_ckpt(tmp_path / "b" / "models" / "last.ckpt")["state_dict"]
    for key, value in original.items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(tuned[f"loss_resnet_pl.impl.{key}"], value), key


def test_run_folder_says_which_step_best_is_and_why(tiny_run):
    """best.ckpt can hold a later step with a lower SSIM than step 0's baseline: models/best.json
    names the step, its validation SSIM (as val.csv has it) and the rule that chose it."""
    import json

    note = json.loads((tiny_run / "models" / "best.json").read_text())
    best = read_ckpt(tiny_run / "models" / "best.ckpt")
    assert note["step"] == best["global_step"] == 40
    with (tiny_run / "val.csv").open() as f:
        rows = {int(r["step"]): float(r["ssim"]) for r in csv.DictReader(f)}
    assert note["metric"] == "val_ssim"
    assert note["value"] == pytest.approx(rows[40], rel=1e-5)
    assert "step 0" in note["why"] and "baseline" in note["why"]


def test_ctrl_c_saves_a_run_that_resume_continues(train_photos, tmp_path):
    """A real Ctrl-C (SIGINT to the process group, as a terminal sends it, data workers
    included) stops `lama-train fit` after the current step, saves models/last.ckpt, says so
    in one line and exits 130; --resume continues from that step."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAMA_OFFLINE": "1"}
    argv = [sys.executable, "-m", "lama_model.train.cli", "fit", str(train_photos), "--out",
            str(run), *TINY_TRAIN_ARGS, "--workers", "1", "--steps", "100000"]  # fmt: skip
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while not _train_rows(run) >= 3 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    last_line = err.strip().splitlines()[-1]
    assert "interrupted after step" in last_line and "--resume" in last_line, err[-2000:]
    step = read_ckpt(run / "models" / "last.ckpt")["global_step"]
    assert step >= 3 and f"step {step}" in last_line
    assert _train_rows(run) == step  # every finished step logged, and none after the save
    code = lama_train(["fit", "--resume", "--out", str(run), "--steps", str(step + 2),
                       "--workers", "0", "--no-progress"])  # fmt: skip
    assert code == 0
    assert read_ckpt(run / "models" / "last.ckpt")["global_step"] == step + 2


def _train_rows(run: Path) -> int:
    path = run / "train.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def test_best_is_chosen_by_the_official_monitor_when_fid_can_be_computed(
    train_photos, tmp_path, monkeypatch, eval_golden
):
    """With the evaluation networks installed (seeded stand-ins here), best.ckpt is the step
    with the highest ssim_fid100_f1, and best.json gives that value, its parts and the rule."""
    import json

    from lama_model.train import trainer
    from lama_model.train.metrics import ssim_fid100_f1

    monkeypatch.setattr(trainer, "installed_networks", eval_golden.tools.seeded_networks)
    fit(train_photos, tmp_path / "run", "--steps", "3", "--val-every", "1")
    note = json.loads((tmp_path / "run" / "models" / "best.json").read_text())
    with (tmp_path / "run" / "val.csv").open() as f:
        rows = {int(r["step"]): float(r["ssim_fid100_f1"]) for r in csv.DictReader(f)}
    assert note["metric"] == "val_ssim_fid100_f1" and "official" in note["why"]
    best_step = max((s for s in rows if s > 0), key=lambda s: rows[s])  # step 0: a baseline
    assert note["step"] == best_step == read_ckpt(tmp_path / "run" / "models" / "best.ckpt")["global_step"]
    parts = note["metrics"]
    assert note["value"] == pytest.approx(ssim_fid100_f1(parts["evaluator_ssim"], parts["fid"]))
    assert note["value"] == pytest.approx(rows[best_step], rel=1e-5)


def test_best_is_chosen_by_ssim_and_says_why_without_the_fid_network(tiny_run):
    import json

    note = json.loads((tiny_run / "models" / "best.json").read_text())
    assert note["metric"] == "val_ssim"
    assert "FID could not be computed" in note["why"] and "lama-train eval" in note["why"]


def test_a_run_folder_without_best_serves_last_with_a_one_line_note(tiny_run, tmp_path, caplog):
    """A run stopped before its first validation has only models/last.ckpt: --model RUN serves
    it and says so in one line, instead of "not a LaMa model folder"."""
    import logging
    import shutil

    run = tmp_path / "stopped"
    shutil.copytree(tiny_run, run)
    (run / "models" / "best.ckpt").unlink()
    (run / "models" / "best.json").unlink()
    with caplog.at_level(logging.WARNING):
        model = load_model(run)
    last = read_ckpt(run / "models" / "last.ckpt")["state_dict"]
    for key, value in model.generator.state_dict().items():
        assert torch.equal(value, last[f"generator.{key}"]), key
    notes = [r.getMessage() for r in caplog.records if "last.ckpt" in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0] and "no models/best.ckpt" in notes[0]
