"""A clone without the shared fixtures runs its tests: those that need fixtures skip, saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import REPO

NEEDS_GOLDEN = "def test_needs_golden(golden_dir):\n    assert golden_dir.is_dir()\n"


def _run_in_a_bare_clone(tmp_path, **env):
    tests = tmp_path / "clone" / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_sample.py").write_text(NEEDS_GOLDEN)
    clean = {k: v for k, v in os.environ.items()
             if k not in ("LAMA_FIXTURES_DIR", "LAMA_GOLDEN_DIR", "REQUIRE_FIXTURES")}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tests)],
        cwd=tmp_path / "clone", env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_without_fixtures_the_tests_that_need_them_skip_with_the_reason(tmp_path):
    proc = _run_in_a_bare_clone(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 skipped" in proc.stdout and "FIXTURES NOT FOUND: lama-golden" in proc.stdout


def test_fixtures_required_or_named_but_missing_fail(tmp_path):
    assert _run_in_a_bare_clone(tmp_path, REQUIRE_FIXTURES="1").returncode == 1
    named = _run_in_a_bare_clone(tmp_path, LAMA_FIXTURES_DIR=str(tmp_path / "nowhere"))
    assert named.returncode == 1 and "FIXTURES NOT FOUND" in named.stdout
