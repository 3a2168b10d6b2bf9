"""Independent units run together: ``UnitRunner.run_many`` on a fake engine (order, concurrency, retries,
budget, listeners), the BiX-NAS retraining seeds resumed per seed, ``examples/bixnas_multigpu.yml``, and a
real ``nnictl`` experiment whose three retraining trials overlap with ``trialConcurrency: 3`` and give the
same IoUs as with ``trialConcurrency: 1``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import pytest
import torch.nn as nn
import yaml
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, TrainingEndEvent
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.space import ModelStatus, RawFormatModelSpace

from nni_bixnas.strategy.runner import NoBudget, UnitFailed, UnitRunner, add_unit_listener

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Tiny(ModelSpace):
    def __init__(self):
        super().__init__()
        self.op = LayerChoice([nn.Identity(), nn.ReLU()], label="op")


def job(model, *, name: str, ticks: int = 1) -> dict:
    return {"default": 0.5, "name": name}


ENGINES: list = []  # the fake engines of the running test


class FakeEngine(ExecutionEngine):
    """``workers`` jobs at once; a job ends ``ticks`` ticks after it started (:meth:`tick`: one sleep of the
    runner); names in ``fail`` fail that many times first; ``budget`` caps submissions."""

    def __init__(self, workers: int, budget: int = None, fail: Dict[str, int] = None) -> None:
        super().__init__()
        self.workers, self.budget, self.fail = workers, budget, dict(fail or {})
        self.running: List[list] = []
        self.log: List[tuple] = []  # ('start' | 'end', name), in order
        self.submitted = 0
        ENGINES.append(self)

    def submit_models(self, *models) -> None:
        for model in models:
            assert len(self.running) < self.workers, "submitted beyond the idle workers"
            self.submitted += 1
            model.status = ModelStatus.Training
            self.running.append([model, model.evaluator.arguments.get("ticks", 1)])
            self.log.append(("start", model.evaluator.arguments["name"]))

    def tick(self) -> None:
        for entry in list(self.running):
            entry[1] -= 1
            if entry[1] > 0:
                continue
            self.running.remove(entry)
            model = entry[0]
            args = dict(model.evaluator.arguments)
            self.log.append(("end", args["name"]))
            if self.fail.get(args["name"], 0) > 0:
                self.fail[args["name"]] -= 1
                self.dispatch_model_event(TrainingEndEvent(model, ModelStatus.Failed))
                continue
            self.dispatch_model_event(FinalMetricEvent(model, model.evaluator.function(None, **args)))
            self.dispatch_model_event(TrainingEndEvent(model, ModelStatus.Trained))

    def idle_worker_available(self) -> bool:
        return len(self.running) < self.workers

    def budget_available(self) -> bool:
        return self.budget is None or self.submitted < self.budget

    def list_models(self, status=None):
        return []

    def shutdown(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass


@pytest.fixture(autouse=True)
def engine_time(monkeypatch):
    """Time passes for the fake engines only while the runner sleeps."""
    from nni_bixnas.strategy import runner

    ENGINES.clear()
    clock = SimpleNamespace(sleep=lambda seconds: [engine.tick() for engine in ENGINES], monotonic=time.monotonic)
    monkeypatch.setattr(runner, "time", clock)


def run_many(engine: FakeEngine, ticks: List[int], retries: int = 1, seen=None):
    space = RawFormatModelSpace.from_model(Tiny(), FunctionalEvaluator(job, name="x"))
    jobs = [(job, {"op": 0}, {"name": f"u{i}", "ticks": t}) for i, t in enumerate(ticks)]
    finished = [] if seen is None else seen
    with UnitRunner(space, engine, retries=retries) as runner:
        return runner.run_many(jobs, on_result=lambda i, r: finished.append(i), grace_s=0, poll_s=0)


def overlapping(log) -> int:
    """The most jobs running at once in an engine's log."""
    most = now = 0
    for kind, _ in log:
        now += 1 if kind == "start" else -1
        most = max(most, now)
    return most


def test_run_many_runs_up_to_the_workers_at_once_and_returns_results_in_submission_order():
    engine, finished = FakeEngine(workers=3), []
    results = run_many(engine, ticks=[4, 1, 2], seen=finished)
    assert [r["name"] for r in results] == ["u0", "u1", "u2"]
    assert finished == [1, 2, 0]  # on_result as each ends
    assert [kind for kind, _ in engine.log[:3]] == ["start"] * 3 and overlapping(engine.log) == 3

    one = FakeEngine(workers=1)
    assert [r["name"] for r in run_many(one, ticks=[3, 1, 2])] == ["u0", "u1", "u2"]
    assert overlapping(one.log) == 1 and [n for k, n in one.log if k == "start"] == ["u0", "u1", "u2"]


def test_run_many_retries_a_failed_unit_first_and_reports_the_others_when_it_fails_for_good():
    engine = FakeEngine(workers=2, fail={"u1": 1})
    results = run_many(engine, ticks=[1, 1, 3])
    assert [r["name"] for r in results] == ["u0", "u1", "u2"]
    starts = [n for k, n in engine.log if k == "start"]
    assert starts == ["u0", "u1", "u1", "u2"]  # the retry goes before the unit not yet submitted

    engine, finished = FakeEngine(workers=3, fail={"u1": 2}), []
    with pytest.raises(UnitFailed, match="unit job ended with status failed") as error:
        run_many(engine, ticks=[1, 1, 3], retries=1, seen=finished)
    assert not isinstance(error.value, NoBudget)
    assert [None if r is None else r["name"] for r in error.value.results] == ["u0", None, "u2"]
    assert sorted(finished) == [0, 2]  # the others ran to the end and were recorded


def test_run_many_stops_submitting_when_the_budget_is_spent_and_calls_listeners_per_submission():
    engine, calls = FakeEngine(workers=3, budget=2), []
    remove = add_unit_listener(engine, lambda: calls.append(engine.submitted))
    try:
        with pytest.raises(NoBudget, match="no budget left for unit job") as error:
            run_many(engine, ticks=[2, 1, 1])
    finally:
        remove()
    assert [None if r is None else r["name"] for r in error.value.results] == ["u0", "u1", None]
    assert calls == [0, 1] and engine.submitted == 2  # the listener runs before each submission


def test_run_is_run_many_of_one():
    engine = FakeEngine(workers=1, fail={"u": 1})
    space = RawFormatModelSpace.from_model(Tiny(), FunctionalEvaluator(job, name="x"))
    with UnitRunner(space, engine, retries=1) as runner:
        assert runner.run(job, {"op": 1}, name="u", grace_s=0) == {"default": 0.5, "name": "u"}
    assert [k for k, _ in engine.log] == ["start", "end", "start", "end"]


def test_the_multigpu_example_is_a_valid_experiment_with_four_concurrent_seeds():
    from nni.experiment.config import ExperimentConfig

    from nni_bixnas.experiment.spec import BridgeSpec, check_gpus

    config = yaml.safe_load((EXAMPLES / "bixnas_multigpu.yml").read_text())
    ExperimentConfig(**config).validate()
    check_gpus(config, device_count=4)
    with pytest.raises(ValueError, match="trialGpuNumber is 1 but this machine has 0 CUDA GPU"):
        check_gpus({**config, "trialGpuNumber": 1}, device_count=0)
    spec = BridgeSpec.from_class_args(config["tuner"]["classArgs"], check_paths=False)
    _, strategy, _ = spec.build()
    assert config["trialConcurrency"] == len(strategy.retrain_kwargs["seeds"]) == 4
    assert config["trialGpuNumber"] == 1 and config["trainingService"]["useActiveGpu"] is True


def _unit(trial: dict) -> str:
    return json.loads(trial["hyperParameters"][0])["parameters"]["mutation_summary"]["unit"]


def run_experiment(tmp_path: Path, env, concurrency: int) -> dict:
    """The tiny ``bixnas.yml`` with three retraining seeds at ``trialConcurrency``, run to DONE; the most
    retraining trials seen RUNNING at once (by polling the manager), the trials, result.json, the wall time."""
    from nni_bixnas.experiment.launch import ManagerClient, experiment_id_from_output, free_port, nnictl, stop
    from test_experiment_bixnas import tiny
    from test_experiment_nnictl import write_config

    def edit(config):
        tiny(config)
        config["trialConcurrency"] = concurrency
        config["tuner"]["classArgs"]["strategy_kwargs"]["retrain"]["seeds"] = [0, 1, 2]

    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    started = time.monotonic()
    exp_id = experiment_id_from_output(nnictl(["create", "--config", str(write_config(tmp_path, "bixnas.yml", edit)),
                                               "--port", str(port)], env))
    client = ManagerClient(port)
    most_running, status = 0, None
    try:
        deadline = time.monotonic() + 1500
        while time.monotonic() < deadline:
            status = client.status()["status"]
            trials = client.trial_jobs()
            running = [t for t in trials if t["status"] == "RUNNING" and t.get("hyperParameters")]
            most_running = max(most_running, sum(_unit(t) == "retrain" for t in running))
            if status in ("DONE", "ERROR", "STOPPED"):
                break
            time.sleep(0.5)
        assert status == "DONE", client.status()
        trials = client.trial_jobs()
    finally:
        stop([exp_id], env)
    expdir = tmp_path / "experiments" / exp_id
    return {"most_running": most_running, "wall_s": time.monotonic() - started,
            "retrains": [t for t in trials if _unit(t) == "retrain"], "trials": trials,
            "result": json.loads((expdir / "strategy" / "result.json").read_text()),
            "log": (expdir / "log" / "dispatcher.log").read_text()}


@pytest.mark.slow
def test_three_retraining_seeds_run_at_once_with_the_sequential_results(tmp_path, nni_home):
    from nni_bixnas.experiment.launch import decode_metric

    _, env = nni_home
    together = run_experiment(tmp_path / "concurrency3", env, 3)
    alone = run_experiment(tmp_path / "concurrency1", env, 1)
    spans = [(max(t["endTime"] for t in run["retrains"]) - min(t["startTime"] for t in run["retrains"])) / 1e3
             for run in (together, alone)]
    print(f"tiny bixnas.yml, 3 retraining seeds: experiment {together['wall_s']:.0f} s with trialConcurrency 3, "
          f"{alone['wall_s']:.0f} s with 1; the retraining trials {spans[0]:.0f} s and {spans[1]:.0f} s "
          f"({len(together['trials'])} and {len(alone['trials'])} trials)")

    for run in (together, alone):
        assert all(t["status"] == "SUCCEEDED" for t in run["trials"]), [t["status"] for t in run["trials"]]
        assert len(run["retrains"]) == 3
    # The three retrainings overlapped: seen RUNNING together, and each started before any ended.
    assert together["most_running"] == 3
    retrains = together["retrains"]
    assert max(t["startTime"] for t in retrains) < min(t["endTime"] for t in retrains)
    # One at a time with trialConcurrency 1: each retraining started after the previous one ended.
    assert alone["most_running"] == 1
    ordered = sorted(alone["retrains"], key=lambda t: t["startTime"])
    assert all(a["endTime"] <= b["startTime"] for a, b in zip(ordered, ordered[1:]))

    # The same search and the same retrained IoU per seed (CPU deterministic), in seed order.
    assert together["result"]["genes"] == alone["result"]["genes"]
    ious = [{r["seed"]: r["default"] for r in run["result"]["retrained"]} for run in (together, alone)]
    assert [r["seed"] for r in together["result"]["retrained"]] == [0, 1, 2]
    assert ious[0] == ious[1], ious
    for key in ("retrained_iou_mean", "retrained_iou_std", "retrained_seeds"):
        assert together["result"][key] == alone["result"][key]
    assert together["result"]["retrained_seeds"] == 3
    # Each seed's trial reports its own IoU; one more trial, the last, reports the headline as its default.
    finals = [decode_metric(t["finalMetricData"][0]["data"]) for t in retrains]
    assert sorted(f["default"] for f in finals) == sorted(ious[0].values())
    assert not any("retrained_iou_mean" in f for f in finals)
    for run in (together, alone):
        last = max(run["trials"], key=lambda t: t["sequenceId"])
        headline = decode_metric(last["finalMetricData"][0]["data"])
        assert _unit(last) == "result" and headline["default_is"] == "retrained_iou_mean"
        assert headline["default"] == headline["retrained_iou_mean"] == run["result"]["retrained_iou_mean"]
    assert f"retrained IoU {together['result']['retrained_iou_mean']:.4f} ±" in together["log"]
    assert "over 3 seeds" in together["log"]
