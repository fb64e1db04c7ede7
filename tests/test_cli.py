"""``lama-inpaint`` as a user runs it: golden equivalence, folder mode, exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lama_server.commands.image_files import read_image, write_image
from lama_server.commands.inpaint import main

# The official-equality contract is a float32 contract: pinned, whatever `auto` picks on this CPU.
OFFICIAL_FLAGS = ["--device", "cpu", "--precision", "fp32", "--mask-grow", "0", "--feather", "0",
                  "--strategy", "original"]  # fmt: skip


@pytest.mark.parametrize("model", ["tiny-lama", "tiny-lama.pt"])
@pytest.mark.parametrize("case", ["case-a", "case-b"])
def test_cli_matches_official_within_one_level(tmp_path, golden_dir, model, case):
    out = tmp_path / "out.png"
    code = main(
        [
            str(golden_dir / case / "image.png"),
            str(golden_dir / case / "mask.png"),
            "-o",
            str(out),
            "--model",
            str(golden_dir / model),
            *OFFICIAL_FLAGS,
            *(["--allow-torchscript"] if model.endswith(".pt") else []),
        ]
    )
    assert code == 0
    result = np.asarray(Image.open(out)).astype(np.float64)
    expected = np.load(golden_dir / case / "expected.npy") * 255
    assert np.abs(result - expected).max() <= 1.0
    image = np.asarray(Image.open(golden_dir / case / "image.png").convert("RGB"))
    outside = np.asarray(Image.open(golden_dir / case / "mask.png").convert("L")) == 0
    np.testing.assert_array_equal(result[outside], image[outside])


def test_entry_point_runs_as_a_program(tmp_path, golden_dir):
    out = tmp_path / "out.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lama_server.commands.inpaint",
            str(golden_dir / "case-a/image.png"),
            str(golden_dir / "case-a/mask.png"),
            "-o",
            str(out),
            "--model",
            str(golden_dir / "tiny-lama"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert read_image(out).shape == (157, 203, 3)


def test_empty_mask_returns_input_unchanged(tmp_path, golden_dir):
    image = golden_dir / "case-b/image.png"
    blank = tmp_path / "blank.png"
    Image.new("L", Image.open(image).size, 0).save(blank)
    out = tmp_path / "out.png"
    assert (
        main([str(image), str(blank), "-o", str(out), "--model", str(golden_dir / "tiny-lama")])
        == 0
    )
    np.testing.assert_array_equal(read_image(out), read_image(image))


def test_mask_threshold_is_127(tmp_path, golden_dir):
    """Mask pixels of 127 are kept, 128 are filled (8-bit threshold at 127)."""
    image = np.full((32, 32, 3), 50, np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 127
    mask[8:16, 20:28] = 128
    write_image(tmp_path / "i.png", image)
    write_image(tmp_path / "m.png", mask)
    assert (
        main(
            [
                str(tmp_path / "i.png"),
                str(tmp_path / "m.png"),
                "-o",
                str(tmp_path / "o.png"),
                "--model",
                str(golden_dir / "tiny-lama"),
                *OFFICIAL_FLAGS,
            ]
        )
        == 0
    )
    out = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(out[:, :16], image[:, :16])
    assert not np.array_equal(out[8:16, 20:28], image[8:16, 20:28])


def test_rgba_and_16bit_files_keep_their_format(tmp_path, golden_dir):
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:20, 10:20] = 255
    write_image(tmp_path / "m.png", mask)
    for name, pixels in {
        "rgba": rng.integers(0, 256, (40, 48, 4), dtype=np.uint8),
        "deep": rng.integers(0, 65536, (40, 48, 3), dtype=np.uint16),
        "grey": rng.integers(0, 256, (40, 48, 1), dtype=np.uint8),
    }.items():
        write_image(tmp_path / f"{name}.png", pixels)
        out = tmp_path / f"{name}-out.png"
        assert (
            main(
                [
                    str(tmp_path / f"{name}.png"),
                    str(tmp_path / "m.png"),
                    "-o",
                    str(out),
                    "--model",
                    str(golden_dir / "tiny-lama"),
                ]
            )
            == 0
        )
        result = read_image(out)
        assert result.shape == pixels.shape and result.dtype == pixels.dtype, name
        np.testing.assert_array_equal(result[30:, 30:], pixels[30:, 30:])
        if name == "rgba":
            np.testing.assert_array_equal(result[:, :, 3], pixels[:, :, 3])


def test_folder_mode_uses_the_official_layout(tmp_path, golden_dir):
    src = tmp_path / "in"
    src.mkdir()
    for case in ("case-a", "case-b"):
        shutil.copy(golden_dir / case / "image.png", src / f"{case}.png")
        shutil.copy(golden_dir / case / "mask.png", src / f"{case}_mask001.png")
    code = main(
        [
            "--input-dir",
            str(src),
            "--output-dir",
            str(tmp_path / "out"),
            "--model",
            str(golden_dir / "tiny-lama"),
            "--quiet",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "case-a_mask001.png",
        "case-b_mask001.png",
    ]


def test_folder_mode_reports_images_without_a_mask_and_creates_output_folders(
    tmp_path, golden_dir, capsys
):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(golden_dir / "case-b/image.png", src / "sub" / "x.png")
    shutil.copy(golden_dir / "case-b/mask.png", src / "sub" / "x_mask.png")
    shutil.copy(golden_dir / "case-a/image.png", src / "lonely.png")
    out = tmp_path / "not" / "yet" / "there"
    code = main(["--input-dir", str(src), "--output-dir", str(out), "--model",
                 str(golden_dir / "tiny-lama"), "--quiet"])  # fmt: skip
    assert code == 0
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.png")] == ["sub/x_mask.png"]
    err = capsys.readouterr().err
    assert "1 image(s) without a mask" in err and "lonely.png" in err


def test_single_file_output_folder_is_created(tmp_path, golden_dir):
    case = golden_dir / "case-b"
    out = tmp_path / "new" / "folder" / "out.png"
    code = main([str(case / "image.png"), str(case / "mask.png"), "-o", str(out), "--model",
                 str(golden_dir / "tiny-lama"), "--device", "cpu"])  # fmt: skip
    assert code == 0 and out.is_file()


def test_missing_file_exits_2_with_one_line(tmp_path, golden_dir, capsys):
    code = main(
        [
            str(tmp_path / "nope.png"),
            str(golden_dir / "case-a/mask.png"),
            "-o",
            str(tmp_path / "o.png"),
            "--model",
            str(golden_dir / "tiny-lama"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.png: no such file" in err[0]


def test_size_mismatch_exits_2(tmp_path, golden_dir, capsys):
    code = main(
        [
            str(golden_dir / "case-a/image.png"),
            str(golden_dir / "case-b/mask.png"),
            "-o",
            str(tmp_path / "o.png"),
            "--model",
            str(golden_dir / "tiny-lama"),
        ]
    )
    assert code == 2
    assert "mask is 256×256 but the image is 203×157" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_unreadable_image_exits_2(tmp_path, golden_dir, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code = main(
        [
            str(bad),
            str(golden_dir / "case-a/mask.png"),
            "-o",
            str(tmp_path / "o.png"),
            "--model",
            str(golden_dir / "tiny-lama"),
        ]
    )
    assert code == 2
    assert "not a readable image" in capsys.readouterr().err


def test_bad_model_exits_1(tmp_path, golden_dir, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_text("nope")
    code = main(
        [
            str(golden_dir / "case-a/image.png"),
            str(golden_dir / "case-a/mask.png"),
            "-o",
            str(tmp_path / "o.png"),
            "--model",
            str(junk),
        ]
    )
    assert code == 1
    assert "junk.ckpt: not a PyTorch checkpoint" in capsys.readouterr().err


def test_unavailable_device_exits_1(tmp_path, golden_dir, capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(
        [
            str(golden_dir / "case-a/image.png"),
            str(golden_dir / "case-a/mask.png"),
            "-o",
            str(tmp_path / "o.png"),
            "--model",
            str(golden_dir / "tiny-lama"),
            "--device",
            "cuda",
        ]
    )
    assert code == 1
    assert "CUDA was requested" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert main(["only-one-arg.png"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["a.png", "m.png", "-o", "o.png", "--strategy", "magic"])
    assert info.value.code == 2


def test_onnxruntime_backend_exports_once_and_matches_official(
    tmp_path, golden_dir, monkeypatch
):
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "cache"))
    case = golden_dir / "case-a"
    args = [str(case / "image.png"), str(case / "mask.png"), "--model",
            str(golden_dir / "tiny-lama"), "--backend", "onnxruntime", *OFFICIAL_FLAGS]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "a.png")]) == 0
    (exported,) = (tmp_path / "cache" / "onnx").glob("tiny-lama-*.onnx")
    first = exported.stat().st_mtime_ns
    assert main([*args, "-o", str(tmp_path / "b.png")]) == 0
    assert exported.stat().st_mtime_ns == first  # reused, not exported again
    result = np.asarray(Image.open(tmp_path / "a.png")).astype(np.float64)
    expected = np.load(case / "expected.npy") * 255
    assert np.abs(result - expected).max() <= 1.0
    # An exported .onnx file is served as is.
    code = main([str(case / "image.png"), str(case / "mask.png"), "--model", str(exported),
                 "--backend", "onnxruntime", "-o", str(tmp_path / "c.png"), *OFFICIAL_FLAGS])  # fmt: skip
    assert code == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c.png")), result.astype(np.uint8))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "x.onnx"], "--backend onnxruntime"),
        (["--backend", "onnxruntime", "--precision", "bf16"], "float32 only"),
        (["--precision", "fp16"], "GPU"),
        (["--server", "tcp://127.0.0.1:9", "--backend", "onnxruntime"], "picks its own"),
    ],
)
def test_impossible_backend_choices_exit_2(tmp_path, golden_dir, capsys, flags, message):
    case = golden_dir / "case-a"
    argv = [str(case / "image.png"), str(case / "mask.png"), "-o", str(tmp_path / "o.png"),
            "--device", "cpu"]  # fmt: skip
    if "--model" not in flags:
        argv += ["--model", str(golden_dir / "tiny-lama")]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists()
