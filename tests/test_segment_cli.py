"""``lama-inpaint IMAGE --box/--points -o OUT``: the object's mask instead of a mask file,
locally and through a server, with one-line errors for prompts that cannot be used."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import start_server
from PIL import Image

from lama_client import host_kit
from lama_server.commands import exit_codes
from lama_server.commands.inpaint import main
from lama_server.wire.pixel_formats import rgb8


def disc_file(folder) -> tuple:
    """A dark disc on a plain background, written as PNG; (path, pixels)."""
    yy, xx = np.mgrid[0:80, 0:96]
    pixels = np.full((80, 96, 3), (205, 200, 190), np.uint8)
    pixels[(xx - 43) ** 2 + (yy - 40) ** 2 < 18**2] = (40, 35, 50)
    path = folder / "photo.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def expected_mask(segmenter, pixels: np.ndarray, box, grow: int) -> np.ndarray:
    """What the command must use: the local segmenter's mask, grown as the plug-ins grow it."""
    found = segmenter.predict(segmenter.embed(rgb8(pixels)), box=box)
    grown = host_kit.grow_mask((found * 255).astype(np.uint8).tobytes(), 96, 80, grow)
    return np.frombuffer(grown, np.uint8).reshape(80, 96)


def run(tmp_path, tiny_model_dir, segmenter_path, *extra: str) -> int:
    photo, _ = disc_file(tmp_path)
    return main([str(photo), "-o", str(tmp_path / "out.png"), "--model", str(tiny_model_dir),
                 "--device", "cpu", "--segment-model", str(segmenter_path),
                 "--quiet", *extra])  # fmt: skip


def test_a_box_removes_the_object_it_holds_without_a_mask_file(
    tmp_path, tiny_model_dir, tiny_segmenter_path, tiny_segmenter
):
    code = run(tmp_path, tiny_model_dir, tiny_segmenter_path, "--box", "22,20,44,40", "--mask-grow", "3",
               "--save-mask", str(tmp_path / "mask.png"))  # fmt: skip
    assert code == exit_codes.OK
    _, pixels = disc_file(tmp_path)
    saved = np.asarray(Image.open(tmp_path / "mask.png"))
    saved = saved[:, :, 0] if saved.ndim == 3 else saved
    assert np.array_equal(saved, expected_mask(tiny_segmenter, pixels, (22, 20, 66, 60), 3))
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    # Untouched far from the (grown) mask: the inpaint grows and feathers it a little more.
    far = host_kit.grow_mask(saved.tobytes(), 96, 80, 3 + 4 + 2)
    outside = np.frombuffer(far, np.uint8).reshape(80, 96) == 0
    assert np.array_equal(out[outside], pixels[outside])


def test_the_server_gives_the_same_mask(
    tmp_path, tiny_model_dir, tiny_segmenter_path, tiny_segmenter, monkeypatch
):
    server = start_server(tmp_path, tiny_model_dir, "--segment-model", str(tiny_segmenter_path))
    monkeypatch.setenv("LAMA_TOKEN_FILE", str(server.token_file))
    try:
        code = run(tmp_path, tiny_model_dir, tiny_segmenter_path, "--box", "22,20,44,40", "--server", server.endpoint,
                   "--save-mask", str(tmp_path / "mask.png"))  # fmt: skip
    finally:
        server.stop()
    assert code == exit_codes.OK
    _, pixels = disc_file(tmp_path)
    saved = np.asarray(Image.open(tmp_path / "mask.png"))
    saved = saved[:, :, 0] if saved.ndim == 3 else saved
    assert np.array_equal(saved, expected_mask(tiny_segmenter, pixels, (22, 20, 66, 60), 4))


@pytest.mark.parametrize(
    ("flags", "text"),
    [
        (["--box", "1,2,3"], "expected 4 comma-separated numbers"),
        (["--box", "a,b,c,d"], "expected 4 comma-separated numbers"),
        (["--box", "1,2,0,5"], "width and height must be positive"),
        (["--box", "90,70,20,20"], "lies outside the 96×80 image"),
        (["--points", "500,5"], "lies outside the 96×80 image"),
        (["--points", "5,5,7"], "the label must be 1 or 0"),
        (["--points", ";"], "at least one box or point"),
    ],
)
def test_unusable_prompts_exit_with_one_line_before_any_model_loads(
    tmp_path, tiny_model_dir, capsys, flags, text
):
    code = run(tmp_path, tiny_model_dir, tmp_path / "never-loaded.pt", *flags)
    err = capsys.readouterr().err
    assert code == exit_codes.USAGE
    assert text in err and err.count("\n") == 1 and err.startswith("lama-inpaint: error:")


def test_a_mask_file_and_a_box_together_are_refused(tmp_path, tiny_model_dir, capsys):
    photo, _ = disc_file(tmp_path)
    code = main([str(photo), str(photo), "-o", str(tmp_path / "o.png"), "--box", "1,1,5,5"])
    assert code == exit_codes.USAGE
    assert "--box/--points replace the MASK" in capsys.readouterr().err


def test_a_mask_file_may_not_overwrite_the_image_or_the_output(tmp_path, tiny_model_dir, capsys):
    photo, _ = disc_file(tmp_path)
    out = tmp_path / "out.png"
    for target, text in ((photo, "writing there would destroy it"), (out, "is the output")):
        code = main([str(photo), "-o", str(out), "--box", "1,1,5,5", "--save-mask", str(target)])
        assert code == exit_codes.USAGE
        assert text in capsys.readouterr().err
