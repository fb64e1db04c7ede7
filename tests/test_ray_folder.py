"""``lama-inpaint --input-dir --output-dir --ray``: the folder job on a real local Ray cluster
writes the same bytes as the local folder mode, resumes after being killed, reports failures."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RAY_TIMEOUT_S, write_folder_cases

from lama_server.commands import ray_folder
from lama_server.commands.inpaint import build_parser, main, make_image_task

pytest.importorskip("ray")
FIXED = ["--device", "cpu", "--precision", "fp32", "--quiet"]


def tiny(golden_dir: Path) -> list[str]:
    return ["--model", str(golden_dir / "tiny-lama"), *FIXED]


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden partial files included) by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, golden_dir):
    """Eight images through the local folder mode: what every Ray run must write."""
    root = tmp_path_factory.mktemp("ray-folder")
    src = write_folder_cases(golden_dir, root / "in", 8)
    assert main(["--input-dir", str(src), "--output-dir", str(root / "local"),
                 *tiny(golden_dir)]) == 0  # fmt: skip
    return src, files(root / "local")


def test_ray_folder_job_writes_the_local_folder_modes_bytes(
    ray_cluster, local_reference, golden_dir, tmp_path, capsys
):
    src, reference = local_reference
    out = tmp_path / "ray"
    args = ["--input-dir", str(src), "--output-dir", str(out), "--ray", ray_cluster,
            "--model", str(golden_dir / "tiny-lama"), "--device", "cpu", "--precision", "fp32"]  # fmt: skip
    assert main(args) == 0
    assert files(out) == reference and len(reference) == 8
    assert "wrote 8 images" in capsys.readouterr().out

    # Run again: every output is complete, so nothing is recomputed.
    assert main(args) == 0
    assert "wrote 0 images" in capsys.readouterr().out and files(out) == reference


def test_ray_folder_job_resumes_after_being_killed_halfway(
    ray_cluster, local_reference, golden_dir, tmp_path, capsys
):
    src, reference = local_reference
    out = tmp_path / "ray"
    args = ["--input-dir", str(src), "--output-dir", str(out), "--ray", ray_cluster,
            "--ray-actors", "1", *tiny(golden_dir)]  # fmt: skip
    job = subprocess.Popen([sys.executable, "-m", "lama_server.commands.inpaint", *args],
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + RAY_TIMEOUT_S
    while not list(out.rglob("photo*.png")) and job.poll() is None:
        assert time.monotonic() < deadline, "the Ray folder job wrote nothing"
        time.sleep(0.005)
    job.send_signal(signal.SIGKILL)
    job.wait(30)
    killed = files(out)
    done = {name: data for name, data in killed.items() if not name.split("/")[-1].startswith(".")}
    # Killed mid-way: every file under a final name is complete and right.
    assert done and len(done) < len(reference), "not killed halfway: " + job.stderr.read()
    assert all(reference[name] == data for name, data in done.items())
    first_written = {name: os.stat(out / name).st_mtime_ns for name in done}

    assert main([*args[:-1]]) == 0  # the same command, now with its summary line
    resumed = {k: v for k, v in files(out).items() if not k.split("/")[-1].startswith(".")}
    assert resumed == reference
    assert all(os.stat(out / name).st_mtime_ns == ns for name, ns in first_written.items())
    assert f"skipped {len(done)} already done" in capsys.readouterr().out


def test_ray_folder_job_summarises_failures_and_writes_the_rest(ray_cluster, golden_dir, tmp_path):
    # Every check that can run before the job does (lama-inpaint refuses a broken file at
    # once); what is left is a file that changes while a long job runs: here one deleted.
    src = write_folder_cases(golden_dir, tmp_path / "in", 2)
    out = tmp_path / "out"
    args = build_parser().parse_args(["--input-dir", str(src), "--output-dir", str(out),
                                      *tiny(golden_dir)])  # fmt: skip
    jobs = [(src / "photo000.png", src / "photo000_mask.png", out / "photo000_mask.png"),
            (src / "sub/photo001.png", src / "sub/photo001_mask.png", out / "sub/photo001_mask.png")]  # fmt: skip
    jobs[0][0].unlink()
    summary = ray_folder.run_folder(jobs, functools.partial(make_image_task, args), quiet=True)
    assert (summary.written, summary.skipped) == (1, 0)
    assert [image for image, _ in summary.failures] == [str(jobs[0][0])]
    assert "no such file" in summary.failures[0][1] or "No such file" in summary.failures[0][1]
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.png")] == ["sub/photo001_mask.png"]


def test_ray_flag_is_for_folder_jobs_only(golden_dir, tmp_path, capsys):
    case = golden_dir / "case-a"
    code = main([str(case / "image.png"), str(case / "mask.png"), "-o", str(tmp_path / "o.png"),
                 "--ray", *tiny(golden_dir)])  # fmt: skip
    assert code == 2
    assert "--ray runs folder jobs" in capsys.readouterr().err


def test_ray_folder_job_stops_with_one_line_when_actors_cannot_load_the_model(
    ray_cluster, golden_dir, tmp_path, capsys
):
    src = write_folder_cases(golden_dir, tmp_path / "in", 2)
    code = main(["--input-dir", str(src), "--output-dir", str(tmp_path / "out"), "--ray",
                 ray_cluster, "--model", str(tmp_path / "no-such-model"), *FIXED])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lama-inpaint: error: a Ray actor could not load the model: ")
    assert "no-such-model" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists()
