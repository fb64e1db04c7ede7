"""``lama-train`` as a user meets it: help, mask sets, clear one-line errors, offline weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import TINY_TRAIN_ARGS
from PIL import Image

from lama_model.train.cli import main as lama_train
from lama_model.train.trainer import time_left

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_help_explains_the_options_and_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        lama_train(["fit", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--init", "--resume", "--resnet-pl", "--precision", "--accumulate",
                   "torchrun --nproc-per-node", "lama-inpaint photo.jpg mask.png"):  # fmt: skip
        assert needle in text, needle


def test_masks_command_writes_the_official_training_masks(tmp_path, train_fixtures_dir, capsys):
    """Seed 0, 256²: the first masks are the official sampler's first masks, bit for bit."""
    assert lama_train(["masks", "--kind", "large", "--size", "256", "-n", "3", str(tmp_path)]) == 0
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 3
    for i, path in enumerate(files[:2]):
        ours = np.asarray(Image.open(path))
        official = np.asarray(Image.open(train_fixtures_dir / "masks" / f"sample_{i:02d}.png"))
        assert ours.dtype == np.uint8 and set(np.unique(ours)) <= {0, 255}
        np.testing.assert_array_equal(ours, official)


@pytest.mark.parametrize("kind", ["thin", "medium", "thick"])
def test_masks_command_writes_every_kind(tmp_path, kind):
    assert lama_train(["masks", "--kind", kind, "--size", "64", "-n", "2", str(tmp_path)]) == 0
    masks = [np.asarray(Image.open(p)) for p in sorted(tmp_path.glob("*.png"))]
    assert len(masks) == 2 and all(m.shape == (64, 64) and m.max() == 255 for m in masks)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["masks", "--kind", "round", "OUT"], "--kind must be one of"),
        (["fit", "EMPTY", "--out", "RUN"], "no JPEG, PNG or WebP photos found"),
        (["fit", "MISSING", "--out", "RUN"], "no such folder"),
        (["fit", "--out", "RUN"], "give the photo folder"),
        (["fit", "--resume", "--out", "RUN"], "nothing to resume (no config.yaml"),
        (["fit", "PHOTOS", "--out", "RUN", "--crop", "100"], "crop must be a positive multiple"),
        (["fit", "PHOTOS", "--out", "RUN", "--init", "nowhere/"], "no such file or folder"),
        (["fit", "PHOTOS", "--out", "RUN", "--val-data", "EMPTY"], "no JPEG, PNG or WebP photos"),
        (["fit", "PHOTOS", "--out", "RUN", "--max-side", "100"], "max_side must be at least the crop"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(
    argv, needle, tmp_path, train_photos, capsys, monkeypatch
):
    monkeypatch.setenv("LAMA_OFFLINE", "1")  # whatever happens, never the network
    paths = {"OUT": str(tmp_path / "m"), "RUN": str(tmp_path / "run"), "PHOTOS": str(train_photos),
             "MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path / "empty")}  # fmt: skip
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    assert lama_train([paths.get(a, a) for a in argv]) == 2
    assert needle in one_line_error(capsys)


def test_resumed_run_refuses_to_change_its_recipe(tmp_path, train_photos, capsys):
    run = tmp_path / "run"
    argv = ["fit", str(train_photos), "--out", str(run), *TINY_TRAIN_ARGS, "--steps", "1"]
    assert lama_train(argv) == 0
    capsys.readouterr()
    assert lama_train(["fit", "--resume", "--out", str(run), "--crop", "128"]) == 2
    assert "cannot change --crop" in one_line_error(capsys)
    assert lama_train(argv) == 2  # the folder holds a run: no silent overwrite
    assert "--resume" in one_line_error(capsys)


def test_missing_perceptual_weights_offline_say_where_to_get_them_or_how_to_do_without(
    tmp_path, train_photos, monkeypatch, capsys
):
    monkeypatch.setenv("LAMA_OFFLINE", "1")
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "cache"))
    args = [a for a in TINY_TRAIN_ARGS if a not in ("--perceptual-encoder", "tiny-random-for-tests")]
    code = lama_train(["fit", str(train_photos), "--out", str(tmp_path / "run"), *args])
    assert code == 1
    err = one_line_error(capsys)
    assert "sceneparsing.csail.mit.edu" in err and "encoder_epoch_20.pth" in err
    assert "--resnet-pl PATH" in err
    assert "--resnet-pl-weight 0 --l1-missing-weight 2" in err  # the offline route, named


def test_training_from_scratch_fetches_the_perceptual_encoder_once(
    tmp_path, train_photos, monkeypatch
):
    """The registry entry is used as for big-lama: fetched (here from a file:// copy whose
    SHA-256 stands in for the pinned one), verified, then taken from the cache."""
    import dataclasses
    import hashlib

    import torch

    from lama_model.train.perceptual import DilatedResNet50
    from lama_model.weights import downloads as weights

    source = tmp_path / "mirror" / "encoder_epoch_20.pth"
    source.parent.mkdir()
    torch.save(DilatedResNet50().state_dict(), source)
    entry = weights.KNOWN_MODELS["ade20k-resnet50dilated"]
    assert entry.url.startswith("https://sceneparsing.csail.mit.edu/")
    pinned = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setitem(
        weights.KNOWN_MODELS,
        entry.name,
        dataclasses.replace(entry, url=source.as_uri(), digest=pinned),
    )
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LAMA_OFFLINE", raising=False)
    args = [a for a in TINY_TRAIN_ARGS if a not in ("--perceptual-encoder", "tiny-random-for-tests")]
    argv = ["fit", str(train_photos), *args, "--steps", "1", "--val-count", "1"]
    assert lama_train([*argv, "--out", str(tmp_path / "run")]) == 0
    cached = tmp_path / "cache" / entry.filename
    assert cached.read_bytes() == source.read_bytes()
    source.unlink()  # from now on only the cache can serve it
    monkeypatch.setenv("LAMA_OFFLINE", "1")
    assert weights.ensure_model(entry.name) == cached


def test_help_offers_exactly_the_presets_the_config_builds():
    """--help takes its choices from lama_model.choices (no torch); the configs they name are
    lama_model.train.config's presets."""
    from lama_model.choices import PERCEPTUAL_ENCODERS, TRAIN_DISCRIMINATORS, TRAIN_GENERATORS
    from lama_model.train.config import DISCRIMINATOR_PRESETS, GENERATOR_PRESETS, TrainConfig

    assert tuple(GENERATOR_PRESETS) == TRAIN_GENERATORS
    assert tuple(DISCRIMINATOR_PRESETS) == TRAIN_DISCRIMINATORS
    for encoder in PERCEPTUAL_ENCODERS:
        TrainConfig(data="d", run_dir="r", perceptual_encoder=encoder)


def test_offline_init_big_lama_names_lama_trains_own_option(
    tmp_path, train_photos, monkeypatch, capsys
):
    """The download error's advice must be an option lama-train has (--init), not --model."""
    monkeypatch.setenv("LAMA_OFFLINE", "1")
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "cache"))
    code = lama_train(["fit", str(train_photos), "--out", str(tmp_path / "run"),
                       "--init", "big-lama", *TINY_TRAIN_ARGS])  # fmt: skip
    assert code == 1
    err = one_line_error(capsys)
    assert "cannot download big-lama" in err and "--init PATH" in err
    assert "--model" not in err


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 1), (3, 2), (16, 4)])
def test_default_workers_leave_the_training_loop_a_core(monkeypatch, cpus, workers):
    import os

    from lama_model.train.config import TrainConfig

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)), raising=False)
    assert TrainConfig(data="photos", run_dir="runs/x").workers == workers


def test_help_gives_each_generators_true_parameter_count(capsys):
    from lama_model.net.generator import build_generator
    from lama_model.train.cli import GENERATOR_MILLIONS
    from lama_model.train.config import GENERATOR_PRESETS

    for name, config in GENERATOR_PRESETS.items():
        count = sum(p.numel() for p in build_generator(config).parameters())
        assert GENERATOR_MILLIONS[name] == round(count / 1e6, 1), name
    with pytest.raises(SystemExit):
        lama_train(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "small (ngf 32, 4 blocks, 3.4M parameters: sized for a CPU" in text
    # no claim the measurements do not support (README: an hour of 2 cores loses to Telea)
    assert "too few to fill holes better than OpenCV's Telea" in text


def _fit_config(*argv: str):
    from lama_model.train.cli import build_parser, config_from_args

    return config_from_args(build_parser().parse_args(["fit", *argv]))[0]


def test_ngf_and_n_blocks_reshape_the_chosen_generator(train_photos, tmp_path):
    run = ["--out", str(tmp_path / "run")]
    small = _fit_config(str(train_photos), *run, "--generator", "small", "--n-blocks", "2")
    assert (small.generator.ngf, small.generator.n_blocks) == (32, 2)
    wide = _fit_config(str(train_photos), *run, "--ngf", "24")
    assert (wide.generator.ngf, wide.generator.n_blocks) == (24, 18)  # big-lama's depth
    with pytest.raises(ValueError, match="--ngf must be at least 1"):
        _fit_config(str(train_photos), *run, "--ngf", "0")


def test_fine_tune_refuses_to_reshape_its_model(tmp_path, train_photos, tiny_model_dir, capsys):
    assert lama_train(["fit", str(train_photos), "--out", str(tmp_path / "run"), "--init",
                       str(tiny_model_dir), "--n-blocks", "3"]) == 2  # fmt: skip
    assert "a fine-tune (--init) keeps its model's" in one_line_error(capsys)


@pytest.mark.parametrize(("steps", "val_every"), [(None, 2000), (1500, 150), (300, 50), (20, 20)])
def test_validation_interval_follows_the_run_length(train_photos, tmp_path, steps, val_every):
    argv = [str(train_photos), "--out", str(tmp_path / "run")]
    argv += ["--steps", str(steps)] if steps else []
    assert _fit_config(*argv).val_every == val_every
    assert _fit_config(*argv, "--val-every", "7").val_every == 7


def test_offline_loss_options_reach_the_runs_config(train_photos, tmp_path):
    config = _fit_config(str(train_photos), "--out", str(tmp_path / "run"),
                         "--resnet-pl-weight", "0", "--l1-missing-weight", "2")  # fmt: skip
    assert (config.losses.resnet_pl_weight, config.losses.l1_weight_missing) == (0, 2)
    assert config.losses.l1_weight_known == 10  # the rest stays official
    section = config.to_yaml_dict()["losses"]
    assert section["l1"] == {"weight_missing": 2, "weight_known": 10.0}
    with pytest.raises(ValueError, match="l1_weight_missing must be 0 or more"):
        _fit_config(str(train_photos), "--out", str(tmp_path / "r"), "--l1-missing-weight", "-1")


def test_without_a_progress_bar_each_log_row_is_a_progress_line(
    tmp_path, train_photos, caplog
):
    """--no-progress (a run whose output goes to a file) still says how far it is and how long
    is left, one line per train.csv row."""
    argv = ["fit", str(train_photos), "--out", str(tmp_path / "run"), *TINY_TRAIN_ARGS,
            "--steps", "2"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="lama_model.train.trainer"):
        assert lama_train(argv) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    progress = [line for line in lines if "steps/s" in line]
    assert [line.split(":")[0] for line in progress] == ["step 1/2", "step 2/2"], lines
    assert "l1 " in progress[0] and "left" in progress[0] and progress[1].endswith("done")


@pytest.mark.parametrize(
    ("steps", "steps_per_s", "text"),
    [(0, 1.0, "done"), (30, 1.0, "under a minute left"), (600, 1.0, "about 10 min left"),
     (3900, 1.0, "about 1 h 05 min left"), (100, 0.05, "about 33 min left")],
)  # fmt: skip
def test_time_left_reads_as_hours_and_minutes(steps, steps_per_s, text):
    assert time_left(steps, steps_per_s) == text
