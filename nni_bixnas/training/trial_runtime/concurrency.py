"""How many torch threads a trial takes: its share of the machine's CPUs among its experiment's concurrent
trials (``trialConcurrency``), unless the user chose (``OMP_NUM_THREADS``, ``num_threads``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Optional

import torch

from nni_bixnas._checks import is_int
from nni_bixnas.settings import check_setting
from nni_bixnas.training.devices import available_cpus
from nni_bixnas.training.trial_runtime.environment import experiment_dir, in_nni_trial

__all__ = ["default_num_threads", "torch_threads", "trial_concurrency"]

_log = logging.getLogger("nni_bixnas.training")


def trial_concurrency() -> Optional[int]:
    """``trialConcurrency`` of the NNI experiment running this trial, or ``None`` when it cannot be known.

    NNI tells a trial nothing about its siblings; the local training service runs it inside
    ``<experiment dir>/environments/<env>/trials/<id>``, whose ``db/nni.sqlite`` holds the experiment's
    current profile (``nnictl update concurrency`` included). Other training services: ``None``.
    """
    output = os.environ.get("NNI_OUTPUT_DIR")
    expdir = experiment_dir(Path(output)) if output and in_nni_trial() else None
    database = expdir / "db" / "nni.sqlite" if expdir is not None else None
    if database is None or not database.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT params FROM ExperimentProfile ORDER BY revision DESC LIMIT 1").fetchone()
        value = json.loads(row[0]).get("trialConcurrency") if row else None
    except (sqlite3.Error, ValueError, TypeError, AttributeError):
        return None
    return value if is_int(value) and value >= 1 else None


def default_num_threads() -> Optional[int]:
    """The torch thread count :func:`fit` sets when it is given none.

    ``None`` (torch's own default: one thread per core) outside NNI trials, and wherever
    ``OMP_NUM_THREADS`` is set (the user chose). In an NNI trial: ``max(1, cpus // trialConcurrency)``,
    so that concurrent trials do not oversubscribe the cores (``trialConcurrency`` read as
    :func:`trial_concurrency` does; 1 when it cannot be read).
    """
    if os.environ.get("OMP_NUM_THREADS") or not in_nni_trial():
        return None
    return max(1, available_cpus() // (trial_concurrency() or 1))


@contextlib.contextmanager
def torch_threads(num_threads: Optional[int]):
    """Run the block with ``torch.set_num_threads(num_threads)`` (``None``: :func:`default_num_threads`,
    and nothing is changed when that is ``None`` too); the previous count is restored afterwards."""
    if num_threads is not None:
        check_setting("num_threads", num_threads)
    wanted = default_num_threads() if num_threads is None else num_threads
    previous = torch.get_num_threads()
    if wanted is not None and wanted != previous:
        torch.set_num_threads(wanted)
        _log.debug("torch uses %d thread(s)", wanted)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
