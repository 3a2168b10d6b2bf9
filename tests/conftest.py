"""Shared fixtures: the real datasets in ``<repo>/../shared/data`` (skipped when absent), and ``nni_home``
for the ``nnictl`` end-to-end tests."""

from __future__ import annotations

import contextlib
import time
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


def processes_with_home(home: Path):
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("HOME") == str(home):
                found.append(proc)
    return found


@contextlib.contextmanager
def nni_sandbox(home: Path):
    """``(home, env)`` for ``nnictl`` with a temporary HOME; on exit, stop every experiment and check that
    nothing started with that HOME is left running."""
    import psutil

    from nni_bixnas.experiment.launch import nnictl, nnictl_env

    home.mkdir(parents=True, exist_ok=True)
    env = nnictl_env(home)
    try:
        yield home, env
    finally:
        with contextlib.suppress(Exception):
            nnictl(["stop", "--all"], env, timeout=90)
        deadline = time.monotonic() + 45  # the manager gives its dispatcher up to 30 s to exit
        while processes_with_home(home) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = processes_with_home(home)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
    assert not left, f"processes left behind: {[p.cmdline() for p in left]}"


@pytest.fixture
def nni_home(tmp_path):
    """A temporary HOME for ``nnictl`` (see :func:`nni_sandbox`)."""
    with nni_sandbox(tmp_path / "home") as sandbox:
        yield sandbox
