"""``lama-train eval MODEL DATA``: one table per mask-area bin, JSON on request, one-line errors.

The evaluation networks are the seeded stand-ins of tests/golden_tools (the released weights
cannot be downloaded in a test); their numbers are proven equal to the official evaluator's in
tests/test_eval_metrics.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lama_model.train import evaluate
from lama_model.train.cli import main as lama_train


@pytest.fixture
def seeded_networks(monkeypatch, eval_golden):
    monkeypatch.setattr(evaluate, "released_networks", eval_golden.tools.seeded_networks)


def test_eval_prints_one_table_per_bin_and_writes_json(
    tiny_model_dir, train_photos, tmp_path, seeded_networks, capsys
):
    out = tmp_path / "eval.json"
    argv = ["eval", str(tiny_model_dir), str(train_photos), "--masks", "thick", "--size", "64",
            "--json", str(out), "--device", "cpu"]
    assert lama_train(argv) == 0
    table = capsys.readouterr().out
    assert "LPIPS" in table and "FID" in table and "PSNR" in table and "SSIM" in table
    report = json.loads(out.read_text())
    assert report["masks"] == "thick" and report["images"] == 12
    results = report["results"]
    assert results["total"]["n"] == 12
    assert sum(row["n"] for name, row in results.items() if name != "total") == 12
    for name, row in results.items():
        assert f"{name:>10} {row['n']:>6} {row['lpips']:>8.4f}" in table
        assert 0 <= row["ssim"] <= 1 and row["lpips"] >= 0
    assert 0 <= results["total"]["ssim_fid100_f1"] <= 1


def test_eval_with_a_mask_folder_uses_those_masks(
    tiny_model_dir, train_photos, tmp_path, seeded_networks
):
    masks = tmp_path / "masks"
    masks.mkdir()
    hole = np.zeros((64, 64), np.uint8)
    hole[:, :16] = 255  # a quarter of the image: every photo lands in the 20-30% bin
    Image.fromarray(hole).save(masks / "m.png")
    out = tmp_path / "eval.json"
    argv = ["eval", str(tiny_model_dir), str(train_photos), "--masks", str(masks), "--size", "64",
            "--json", str(out), "--device", "cpu"]
    assert lama_train(argv) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"total", "20-30%"} and results["20-30%"]["n"] == 12


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("lama-train: ") and "\n" not in err, err
    return err


def test_eval_of_a_folder_without_photos_is_one_line(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert lama_train(["eval", str(tiny_model_dir), str(tmp_path / "empty")]) == 2
    assert "no JPEG, PNG or WebP photos" in _one_line_error(capsys)


def test_eval_with_masks_of_the_wrong_size_is_one_line(tiny_model_dir, train_photos, tmp_path, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(masks / "m.png")
    argv = ["eval", str(tiny_model_dir), str(train_photos), "--masks", str(masks), "--size", "64"]
    assert lama_train(argv) == 2
    assert "48×32" in _one_line_error(capsys)


def test_eval_with_an_evaluation_network_of_the_wrong_checksum_is_one_line(
    tiny_model_dir, train_photos, tmp_path, monkeypatch, capsys
):
    from lama_model.weights.downloads import KNOWN_MODELS

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("LAMA_CACHE_DIR", str(cache))
    monkeypatch.setenv("LAMA_OFFLINE", "1")  # whatever happens, never the network
    (cache / KNOWN_MODELS["lpips-vgg16"].filename).write_bytes(b"not VGG-16")
    argv = ["eval", str(tiny_model_dir), str(train_photos), "--size", "64", "--device", "cpu"]
    assert lama_train(argv) == 1
    assert "checksum mismatch" in _one_line_error(capsys)


def test_eval_psnr_ssim_only_downloads_nothing_and_matches_the_full_evaluation(
    tiny_model_dir, train_photos, tmp_path, seeded_networks, monkeypatch, capsys
):
    """Offline (no network, empty cache) --psnr-ssim-only still judges: the same PSNR and SSIM
    as the full evaluation, LPIPS and FID shown as n/a and written as null."""
    argv = ["eval", str(tiny_model_dir), str(train_photos), "--masks", "thick", "--size", "64",
            "--device", "cpu"]  # fmt: skip
    assert lama_train([*argv, "--json", str(tmp_path / "full.json")]) == 0
    monkeypatch.setattr(evaluate, "released_networks", None)  # calling it would fail
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("LAMA_OFFLINE", "1")
    capsys.readouterr()
    assert lama_train([*argv, "--psnr-ssim-only", "--json", str(tmp_path / "plain.json")]) == 0
    table = capsys.readouterr().out
    assert "PSNR and SSIM only" in table and "n/a" in table and "nan" not in table
    full = json.loads((tmp_path / "full.json").read_text())["results"]
    plain = json.loads((tmp_path / "plain.json").read_text())["results"]
    assert set(plain) == set(full)
    for name, row in plain.items():
        assert row["psnr"] == pytest.approx(full[name]["psnr"], rel=1e-6)
        assert row["ssim"] == pytest.approx(full[name]["ssim"], rel=1e-6)
        assert row["lpips"] is None and row["fid"] is None
    assert plain["total"]["ssim_fid100_f1"] is None


def test_eval_compare_prints_one_table_before_and_after(
    tiny_model_dir, train_photos, tmp_path, seeded_networks, capsys
):
    argv = ["eval", str(tiny_model_dir), str(train_photos), "--masks", "thick", "--size", "64",
            "--device", "cpu", "--psnr-ssim-only"]  # fmt: skip
    assert lama_train([*argv, "--json", str(tmp_path / "before.json")]) == 0
    before = json.loads((tmp_path / "before.json").read_text())["results"]
    capsys.readouterr()
    assert lama_train([*argv, "--compare", str(tmp_path / "before.json")]) == 0
    table = capsys.readouterr().out
    total = before["total"]
    assert f"{total['psnr']:.2f} → {total['psnr']:.2f}" in table  # the same model: no change
    assert f"{total['ssim']:.4f} → {total['ssim']:.4f}" in table
    assert table.count("mask area") == 1 and "n/a → n/a" in table  # one table
    assert lama_train([*argv, "--seed", "1", "--compare", str(tmp_path / "before.json")]) == 2
    assert "seed 0 ≠ 1" in _one_line_error(capsys)
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert lama_train([*argv, "--compare", str(tmp_path / "junk.json")]) == 2
    assert "not a lama-train eval report" in _one_line_error(capsys)
