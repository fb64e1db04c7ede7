"""``lama-inpaint`` never loses a file, fails before the work, and shows the work (issue 26).

Real files in temporary folders, the tiny golden model where a model runs at all.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from lama_server.commands import image_files
from lama_server.commands.image_files import read_image, write_image
from lama_server.commands.inpaint import main


@pytest.fixture
def tiny(golden_dir):
    return ["--model", str(golden_dir / "tiny-lama"), "--device", "cpu"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """A model that can only fail to load: a check made after loading would say so."""
    monkeypatch.setenv("LAMA_OFFLINE", "1")
    monkeypatch.setenv("LAMA_CACHE_DIR", str(tmp_path / "empty-cache"))
    return ["--model", "big-lama", "--device", "cpu"]


def _photo(path, size=(48, 40), seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _mask(path, size=(48, 40)):
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[10:20, 12:24] = 255
    Image.fromarray(mask).save(path)
    return path


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- never lose a file ------------------------------------------------------------------------


def test_folder_run_into_its_own_folder_refuses_to_overwrite_the_masks(tmp_path, tiny, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "x.png")
    _mask(folder / "x_mask.png")
    before = _snapshot(folder)
    assert main(["--input-dir", str(folder), "--output-dir", str(folder), *tiny, "--quiet"]) == 2
    assert _snapshot(folder) == before
    err = capsys.readouterr().err
    assert "x_mask.png" in err and "destroy" in err and err.count("\n") == 1


def test_folder_run_into_its_own_folder_writes_when_no_name_is_an_input(tmp_path, tiny, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "x.png")
    _mask(folder / "x_mask.bmp")
    before = _snapshot(folder)
    assert main(["--input-dir", str(folder), "--output-dir", str(folder), *tiny, "--quiet"]) == 0
    after = _snapshot(folder)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {folder.joinpath("x_mask.png").relative_to(folder)}
    err = capsys.readouterr().err
    assert "writing 1 file(s)" in err and "x_mask.png" in err


def test_output_folder_that_holds_the_input_folder_says_what_it_adds(tmp_path, tiny, capsys):
    (tmp_path / "in").mkdir()
    _photo(tmp_path / "in" / "x.png")
    _mask(tmp_path / "in" / "x_mask.png")
    before = _snapshot(tmp_path)
    code = main(["--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path), *tiny,
                 "--quiet"])  # fmt: skip
    assert code == 0
    after = _snapshot(tmp_path)
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 1
    assert f"writing 1 file(s): {tmp_path / 'x_mask.png'}" in capsys.readouterr().err


def test_rerun_into_a_nested_output_folder_does_not_take_results_for_masks(tmp_path, tiny):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "x.png")
    _mask(folder / "x_mask.png")
    args = ["--input-dir", str(folder), "--output-dir", str(folder / "done"), *tiny, "--quiet"]
    assert main(args) == 0
    assert main(args) == 0
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["x_mask.png"]


@pytest.mark.parametrize("target", ["image", "mask", "link to image", "detour to mask"])
def test_single_run_refuses_an_output_that_names_an_input(tmp_path, tiny, capsys, target):
    image, mask = _photo(tmp_path / "img.png"), _mask(tmp_path / "mask.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.png").symlink_to(image)
    output = {
        "image": image,
        "mask": mask,
        "link to image": tmp_path / "link.png",
        "detour to mask": tmp_path / "sub" / ".." / "mask.png",
    }[target]
    before = _snapshot(tmp_path)
    assert main([str(image), str(mask), "-o", str(output), *tiny]) == 2
    assert _snapshot(tmp_path) == before
    assert "destroy" in capsys.readouterr().err


def test_an_interrupted_write_leaves_no_half_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "out.png"
    out.write_bytes(b"the previous result")

    def interrupted_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        write_image(out, np.zeros((8, 8, 3), np.uint8))
    assert out.read_bytes() == b"the previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


# -- fail before the work -----------------------------------------------------------------------


def _bad_output(tmp_path, case):
    if case == "a folder":
        (tmp_path / "outdir").mkdir()
        return tmp_path / "outdir", "is a folder"
    if case == "under a file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "sub" / "out.png", "is a file"
    return tmp_path / "out.xyz", "unknown image file extension"


@pytest.mark.parametrize("case", ["a folder", "under a file", "unknown extension"])
def test_unwritable_output_is_refused_before_the_model_loads(tmp_path, offline, capsys, case):
    image, mask = _photo(tmp_path / "img.png"), _mask(tmp_path / "mask.png")
    output, message = _bad_output(tmp_path, case)
    started = time.monotonic()
    assert main([str(image), str(mask), "-o", str(output), *offline]) == 2
    assert time.monotonic() - started < 1.0
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_inputs_are_refused_before_the_model_loads(tmp_path, offline, capsys):
    image, mask = _photo(tmp_path / "img.png"), _mask(tmp_path / "small.png", (20, 20))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(image.read_bytes()[:200])
    for argv, message in [
        ([image, mask], "mask is 20×20 but the image is 48×40"),
        ([truncated, image], "truncated.png"),
    ]:
        started = time.monotonic()
        assert main([*map(str, argv), "-o", str(tmp_path / "o.png"), *offline]) == 2
        assert time.monotonic() - started < 1.0
        assert message in capsys.readouterr().err


def test_not_an_image_is_a_bad_input_not_a_download_failure(tmp_path):
    (tmp_path / "notanimage").write_text("hello")
    env = {"LAMA_OFFLINE": "1", "LAMA_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "lama_server.commands.inpaint", "notanimage", "notanimage",
         "-o", "out.png"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "notanimage: not a readable image" in proc.stderr
    assert not (tmp_path / "out.png").exists()


# -- show the work --------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_image_on_a_terminal_shows_progress_and_what_it_wrote(tmp_path, tiny, monkeypatch,
                                                                  capsys):  # fmt: skip
    image, mask = _photo(tmp_path / "img.png"), _mask(tmp_path / "mask.png")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([str(image), str(mask), "-o", str(tmp_path / "out.png"), *tiny]) == 0
    assert "100%" in terminal.getvalue()
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'out.png'} (48×40) in ") and out.endswith(" s\n")


def test_quiet_shows_neither_progress_nor_the_success_line(tmp_path, tiny, monkeypatch, capsys):
    image, mask = _photo(tmp_path / "img.png"), _mask(tmp_path / "mask.png")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([str(image), str(mask), "-o", str(tmp_path / "out.png"), *tiny, "--quiet"]) == 0
    assert terminal.getvalue() == "" and capsys.readouterr().out == ""


def test_success_line_without_a_terminal_and_no_bar(tmp_path, tiny, capsys):
    image, mask = _photo(tmp_path / "img.png"), _mask(tmp_path / "mask.png")
    assert main([str(image), str(mask), "-o", str(tmp_path / "out.png"), *tiny]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("wrote ") and captured.err == ""


# -- EXIF orientation and metadata ----------------------------------------------------------------


def _rotated_photo(path, orientation, icc=None):
    """A photo stored 48×40 whose EXIF says how to show it."""
    pixels = np.random.default_rng(orientation).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[image_files.EXIF_ORIENTATION] = orientation
    exif[0x010F] = "PhoneMaker"  # Make: must survive
    im.save(path, exif=exif.tobytes(), **({"icc_profile": icc} if icc else {}))
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_pixels_are_read_as_displayed(tmp_path, orientation):
    path = _rotated_photo(tmp_path / "photo.png", orientation)
    with Image.open(path) as im:
        shown = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(read_image(path), shown)


def test_a_mask_drawn_on_a_rotated_photo_as_displayed_is_accepted(tmp_path, tiny):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = _rotated_photo(tmp_path / "photo.jpg", 6, icc)
    _mask(tmp_path / "mask.png", (40, 48))  # the displayed photo is 40 wide, 48 high
    out = tmp_path / "out.jpg"
    assert main([str(photo), str(tmp_path / "mask.png"), "-o", str(out), *tiny, "--quiet"]) == 0
    with Image.open(out) as result, Image.open(photo) as original:
        assert result.size == (40, 48) == ImageOps.exif_transpose(original).size
        exif = result.getexif()
        assert exif.get(image_files.EXIF_ORIENTATION) == 1 and exif.get(0x010F) == "PhoneMaker"
        assert result.info.get("icc_profile") == icc


def test_a_mask_drawn_on_the_stored_pixels_gets_the_photo_orientation(tmp_path, tiny):
    photo = _rotated_photo(tmp_path / "photo.png", 8)
    _mask(tmp_path / "mask.png", (48, 40))  # the stored frame, no orientation of its own
    out = tmp_path / "out.png"
    assert main([str(photo), str(tmp_path / "mask.png"), "-o", str(out), *tiny, "--quiet",
                 "--mask-grow", "0", "--feather", "0"]) == 0  # fmt: skip
    with Image.open(photo) as original:
        shown = np.asarray(ImageOps.exif_transpose(original))
    mask = np.rot90(np.asarray(Image.open(tmp_path / "mask.png")), 1) > 127
    result = read_image(out)
    np.testing.assert_array_equal(result[~mask], shown[~mask])
