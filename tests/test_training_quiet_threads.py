"""Torch threads of training (``num_threads``, the NNI trial default) and the library noise ``fit`` silences."""

from __future__ import annotations

import json
import logging
import sqlite3
import warnings

import pytest
import torch

from nni_bixnas.training import fit, make_evaluator
from nni_bixnas.training.trial_runtime import concurrency as threads


def _fake_trial(tmp_path, monkeypatch, concurrency=None):
    """An NNI trial environment in the local training service's layout, with the experiment's profile."""
    expdir = tmp_path / "exp"
    trial = expdir / "environments" / "env1" / "trials" / "T1"
    trial.mkdir(parents=True)
    if concurrency is not None:
        (expdir / "db").mkdir()
        with sqlite3.connect(expdir / "db" / "nni.sqlite") as db:
            db.execute("CREATE TABLE ExperimentProfile (params text, revision integer)")
            db.execute("INSERT INTO ExperimentProfile VALUES (?, 1)", (json.dumps({"trialConcurrency": 1}),))
            db.execute("INSERT INTO ExperimentProfile VALUES (?, 2)", (json.dumps({"trialConcurrency": concurrency}),))
        db.close()
    monkeypatch.setenv("NNI_PLATFORM", "local")
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(trial))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    return trial


@pytest.mark.parametrize("concurrency, expected", [(1, 8), (3, 2), (4, 2), (16, 1), (None, 8)])
def test_a_trial_uses_its_share_of_the_cpus(tmp_path, monkeypatch, concurrency, expected):
    _fake_trial(tmp_path, monkeypatch, concurrency)
    assert threads.trial_concurrency() == concurrency
    assert threads.default_num_threads() == expected


def test_outside_a_trial_or_with_omp_num_threads_torch_keeps_its_default(tmp_path, monkeypatch):
    _fake_trial(tmp_path, monkeypatch, 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_num_threads() is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("NNI_PLATFORM")
    assert threads.default_num_threads() is None


def test_torch_threads_sets_the_count_and_restores_it():
    before = torch.get_num_threads()
    with threads.torch_threads(1) as inside:
        assert inside == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads must be a positive int, got 0"):
        with threads.torch_threads(0):
            pass


def test_the_evaluator_takes_num_threads():
    assert make_evaluator(data="default", num_threads=1).arguments["num_threads"] == 1
    with pytest.raises(ValueError, match="num_threads must be a positive int"):
        make_evaluator(data="default", num_threads=0)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _tiny_fit(out_dir, **kwargs):
    from nni_bixnas import create_model

    return fit(create_model("unet", base=4, levels=2), "default:n=6,size=32", max_epochs=2, out_dir=out_dir,
               progress=False, **kwargs)


@pytest.mark.parametrize("in_trial", [False, True])
def test_fit_is_quiet_and_the_missing_registry_name_is_debug_in_trials(tmp_path, monkeypatch, in_trial):
    if in_trial:
        _fake_trial(tmp_path, monkeypatch)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    collect = _Collect()
    for name in ("pytorch_lightning", "lightning_fabric", "nni_bixnas"):
        logging.getLogger(name).addHandler(collect)
    previous = logging.getLogger("nni_bixnas").level
    logging.getLogger("nni_bixnas").setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _tiny_fit(tmp_path / "run", num_threads=1)
    finally:
        for name in ("pytorch_lightning", "lightning_fabric", "nni_bixnas"):
            logging.getLogger(name).removeHandler(collect)
        logging.getLogger("nni_bixnas").setLevel(previous)
    messages = [record.getMessage() for record in collect.records]
    assert not [m for m in messages if "weights_only" in m or "litlogger" in m]
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    unnamed = [r for r in collect.records if "has no registry name" in r.getMessage()]
    assert [r.levelno for r in unnamed] == [logging.DEBUG if in_trial else logging.INFO]
