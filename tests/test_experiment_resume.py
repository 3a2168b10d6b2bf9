"""Resume: ``nnictl stop`` mid-search, then ``nnictl resume``; finished units are never recomputed.

The strategy, space and evaluator here are tiny stand-ins for the BiX-NAS strategies: each "unit" is a
trial that sleeps, reports, and leaves a ``finished-<unit>-<pid>`` file. The trials and the
dispatcher import this module (``codeDirectory`` / ``trialCodeDirectory`` are this folder).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nni
import pytest
import torch.nn as nn
import yaml
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.space import ModelStatus
from nni.nas.strategy import Strategy

HERE = Path(__file__).resolve().parent


class Unit(nn.Module):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index


class UnitSpace(ModelSpace):
    """One choice, ``unit``: which unit of work a trial does."""

    def __init__(self, n_units: int = 4) -> None:
        super().__init__()
        self.unit = LayerChoice([Unit(i) for i in range(n_units)], label="unit")


def run_unit(model: nn.Module, record_dir: str, seconds: float) -> None:
    index = model.unit.index
    for step in range(2):
        time.sleep(seconds / 2)
        nni.report_intermediate_result({"default": float(step)})
    Path(record_dir, f"finished-{index}-{os.getpid()}").touch()
    nni.report_final_result({"default": float(index), "unit": index})


def make_unit_evaluator(record_dir: str, seconds: float = 2.0) -> FunctionalEvaluator:
    return FunctionalEvaluator(run_unit, record_dir=record_dir, seconds=seconds)


class SequentialUnits(Strategy):
    """Submit units 0..n-1 one after another; ``state_dict`` holds the finished ones, which a reloaded
    strategy skips (what the BiX-NAS strategies do with their phases and stages)."""

    def __init__(self, n_units: int = 4) -> None:
        super().__init__()
        self.n_units = n_units
        self.finished = {}

    def _run(self) -> None:
        for index in range(self.n_units):
            if index in self.finished:
                continue
            model = self.model_space.freeze({"unit": index})
            self.engine.submit_models(model)
            self.engine.wait_models(model)
            if model.status != ModelStatus.Trained or model.metric is None:
                return  # cancelled by nnictl stop, or failed
            self.finished[index] = model.metric

    def state_dict(self) -> dict:
        return {"finished": sorted(self.finished.items())}

    def load_state_dict(self, state_dict: dict) -> None:
        self.finished = {int(index): metric for index, metric in state_dict["finished"]}


def _config(tmp_path: Path, record_dir: Path, n_units: int) -> Path:
    config = {
        "experimentName": "bixnas-resume-test",
        "searchSpace": {},
        "trialCommand": "python -m nni.nas.execution.training_service trial",
        "trialCodeDirectory": str(HERE),
        "trialConcurrency": 1,
        "maxTrialNumber": 10,
        "experimentWorkingDirectory": str(tmp_path / "experiments"),
        "tuner": {
            "codeDirectory": str(HERE),
            "className": "nni_bixnas.experiment.NasStrategyAdvisor",
            "classArgs": {
                "model_space": "test_experiment_resume.UnitSpace",
                "model_space_kwargs": {"n_units": n_units},
                "strategy": "test_experiment_resume.SequentialUnits",
                "strategy_kwargs": {"n_units": n_units},
                "evaluator": "test_experiment_resume.make_unit_evaluator",
                "evaluator_kwargs": {"record_dir": str(record_dir), "seconds": 1.0},
            },
        },
        "trainingService": {"platform": "local"},
    }
    path = tmp_path / "resume.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_strategy_state_round_trips_through_the_state_file(tmp_path):
    from nni_bixnas.experiment.state import StateSaver, load_state

    strategy = SequentialUnits(3)
    saver = StateSaver(strategy, tmp_path / "checkpoint" / "strategy_state.json")
    assert saver.save() and not saver.save()  # written once, then unchanged
    strategy.finished[0] = 0.5
    assert saver.save()
    reloaded = SequentialUnits(3)
    reloaded.load_state_dict(load_state(saver.path))
    assert reloaded.finished == {0: 0.5}
    assert load_state(tmp_path / "absent.json") is None


@pytest.mark.slow
def test_nnictl_resume_continues_from_the_last_finished_unit(tmp_path, nni_home):
    from nni_bixnas.experiment.launch import ManagerClient, experiment_id_from_output, free_port, nnictl, stop
    from nni_bixnas.experiment.state import load_state

    home, env = nni_home
    records = tmp_path / "records"
    records.mkdir()
    n_units = 3
    port = free_port()
    exp_id = experiment_id_from_output(nnictl(["create", "--config", str(_config(tmp_path, records, n_units)),
                                               "--port", str(port)], env))
    state_file = tmp_path / "experiments" / exp_id / "checkpoint" / "strategy_state.json"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = load_state(state_file) if state_file.is_file() else None
            if state and len(state["finished"]) >= 1:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"no finished unit within 120 s; state {state_file}: {state_file.is_file()}")
    finally:
        stop([exp_id], env)
    finished_before = {index for index, _ in load_state(state_file)["finished"]}
    assert 1 <= len(finished_before) < n_units

    port = free_port()
    try:
        nnictl(["resume", exp_id, "--port", str(port)], env)
        client = ManagerClient(port)
        assert client.wait_status(timeout=120) == "DONE", client.status()
        trials = client.trial_jobs()
    finally:
        stop([exp_id], env)

    finished = sorted(int(p.name.split("-")[1]) for p in records.glob("finished-*"))
    assert finished == list(range(n_units)), finished  # every unit finished exactly once
    assert [index for index, _ in load_state(state_file)["finished"]] == list(range(n_units))
    statuses = [t["status"] for t in trials]
    assert statuses.count("SUCCEEDED") == n_units and set(statuses) <= {"SUCCEEDED", "USER_CANCELED"}, statuses
    dispatcher_log = (tmp_path / "experiments" / exp_id / "log" / "dispatcher.log").read_text()
    assert "Resumed SequentialUnits from" in dispatcher_log
