"""Shared data fixtures: the real datasets in ``<repo>/../shared/data`` (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent (only on the development machine)")
    return path


@pytest.fixture
def monuseg_root() -> Path:
    """The MoNuSeg 2018 training release (Tissue_Images, Binary_masks, Annotations)."""
    return _shared("monuseg/MoNuSegTrainingData")


@pytest.fixture
def isbi_root() -> Path:
    """The ISBI-2012 training volume (image/, label/)."""
    return _shared("isbi2012/train")
