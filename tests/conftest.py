"""Shared test fixtures: the golden LaMa fixtures that live beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(
    os.environ.get("LAMA_GOLDEN_DIR", REPO.parent / "shared" / "fixtures" / "lama-golden")
)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The official-code golden fixtures (tiny checkpoint, inputs, official outputs)."""
    if not (GOLDEN / "tiny-lama" / "models" / "best.ckpt").is_file():
        pytest.fail(f"golden fixtures not found at {GOLDEN}; set LAMA_GOLDEN_DIR")
    return GOLDEN


@pytest.fixture(scope="session")
def tiny_model_dir(golden_dir: Path) -> Path:
    """The tiny checkpoint in the official big-lama folder layout."""
    return golden_dir / "tiny-lama"
