"""The BiX-NAS chain end to end on tiny data, and its resume after a Phase 2 stage."""

from __future__ import annotations

import json

import nni
import pytest
import torch
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace

from nni_bixnas.space import BiONetPlusPlus, Gene
from nni_bixnas.strategy import units
from nni_bixnas.strategy.bixnas import BiXNAS
from nni_bixnas.strategy.runner import UnitRunner
from nni_bixnas.training import train_and_report

DATA = "default:n=6,size=64"
KW = dict(phase1={"epochs": 1}, phase2={"samples": 2, "epochs": 1, "keep": (2, 1), "macs_input_size": (64, 64)},
          retrain={"seeds": [0], "max_epochs": 1})


def space():
    return RawFormatModelSpace.from_model(
        BiONetPlusPlus(width=4, stem_width=4), FunctionalEvaluator(train_and_report, data=DATA, batch_size=2)
    )


@pytest.fixture
def count_units(monkeypatch):
    """``(unit function name, stage)`` of every unit run (``UnitRunner.run`` goes through ``run_many``)."""
    calls = []
    real_run_many = UnitRunner.run_many

    def run_many(self, jobs, **kwargs):
        calls.extend((function.__name__, unit_kwargs.get("stage")) for function, _, unit_kwargs in jobs)
        return real_run_many(self, jobs, **kwargs)

    monkeypatch.setattr(UnitRunner, "run_many", run_many)
    return calls


@pytest.mark.slow
def test_chain_runs_and_resumes_after_a_phase2_stage(tmp_path, monkeypatch, count_units):
    real_stage = units.phase2_stage_unit

    def crash_on_stage_3(model, **kwargs):
        if kwargs["stage"] == 3:
            raise RuntimeError("simulated crash in stage 3")
        return real_stage(model, **kwargs)

    monkeypatch.setattr(units, "phase2_stage_unit", crash_on_stage_3)
    with pytest.raises(RuntimeError, match="simulated crash in stage 3"):
        BiXNAS(**KW, out_dir=str(tmp_path), seed=0)(space(), SequentialExecutionEngine())
    first = [name for name, _ in count_units]
    assert first.count("selection_matrix_unit") == 1
    stages_done = [stage for name, stage in count_units if name == "crash_on_stage_3"]
    assert stages_done == [5, 4, 3]
    assert (tmp_path / "bixnas_state.pt").is_file()

    count_units.clear()
    monkeypatch.setattr(units, "phase2_stage_unit", real_stage)
    strategy = BiXNAS(**KW, out_dir=str(tmp_path), seed=0)
    strategy(space(), SequentialExecutionEngine())
    resumed = [(name, stage) for name, stage in count_units]
    # Phase 1 and stages 5, 4 are not recomputed: the run continues at stage 3.
    assert resumed == [("phase2_stage_unit", 3), ("phase2_stage_unit", 2), ("phase2_stage_unit", 1),
                       ("retrain_unit", None)]

    result = json.loads((tmp_path / "result.json").read_text())
    assert [h["stage"] for h in result["phase2_history"]] == [5, 4, 3, 2, 1]
    gene = Gene.parse((tmp_path / "gene.txt").read_text())
    assert gene.to_sample() == strategy.phase2.final_samples[0]
    # every chosen index comes from Phase 1's candidates
    for label, chosen in gene.to_sample().items():
        assert set(chosen) <= set(strategy.phase1.candidates[label]), label
    assert len(strategy.retrained) == 1 and (tmp_path / "retrain" / "seed_0" / "checkpoints" / "best.ckpt").is_file()
    models = list(strategy.list_models())
    assert models[0].sample == strategy.phase2.final_samples[0]
    assert [m.metric for m in models] == sorted(m.metric for m in models)[::-1]
    assert len(list(strategy.list_models(limit=1))) == 1


def test_bad_arguments_fail_before_training():
    with pytest.raises(ValueError, match="phase2 must not set 'candidates'"):
        BiXNAS(phase2={"candidates": {}})
    with pytest.raises(ValueError, match="set 'seed' on BiXNAS"):
        BiXNAS(phase1={"seed": 3})
    with pytest.raises(ValueError, match="retrain\\['seeds'\\]"):
        BiXNAS(retrain={"seeds": []})
    with pytest.raises(ValueError):
        BiXNAS(phase2={"samples": 0})


@pytest.mark.slow
def test_search_python_example_runs_the_whole_chain(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "search_python.py"
    out = tmp_path / "search"
    run = subprocess.run(
        [sys.executable, str(example), "--data", "default:n=6,size=64", "--width", "4", "--stem-width", "4",
         "--phase1-epochs", "1", "--phase2-epochs", "1", "--samples", "2", "--retrain-epochs", "1",
         "--retrain-seeds", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(next(l for l in run.stdout.splitlines() if l.startswith('{"best_sample"')))
    assert Gene.parse((out / "gene.txt").read_text()).to_sample() == summary["best_sample"]
    assert 0.0 <= summary["retrained_iou_mean"] <= 1.0
    assert (out / "phase1" / "selection_matrices.png").is_file()


def _unit_splits(out_dir):
    """``{unit folder: (split_seed, val_sources)}`` from every unit's run.json under ``out_dir``."""
    splits = {}
    for path in sorted(out_dir.rglob("run.json")):
        run = json.loads(path.read_text())
        splits[str(path.parent.relative_to(out_dir))] = (run["split_seed"], tuple(run["val_sources"]))
    return splits


@pytest.mark.slow
def test_every_unit_validates_on_the_same_split(tmp_path):
    """Phase 1 (a derived seed), every Phase 2 stage and every retraining seed see the same validation tiles."""
    kw = {**KW, "retrain": {"seeds": [0, 1], "max_epochs": 1}}
    BiXNAS(**kw, out_dir=str(tmp_path), seed=0)(space(), SequentialExecutionEngine())
    splits = _unit_splits(tmp_path)
    units = sorted(splits)
    assert any(u.startswith("phase1") for u in units) and any(u.startswith("retrain/seed_1") for u in units)
    assert sum(u.startswith("phase2/stage_") for u in units) == 5
    assert len(set(splits.values())) == 1, splits
    split_seed, val_sources = next(iter(splits.values()))
    assert split_seed == 0 and len(val_sources) >= 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["split"] == {"split_seed": 0, "val_sources": list(val_sources)}  # recorded with the search


@pytest.mark.slow
def test_inherited_phase2_starts_from_phase1_weights(tmp_path, count_units, monkeypatch):
    seen = []
    real_stage = units.phase2_stage_unit

    def record(model, **kwargs):
        seen.append(kwargs["init_weights"])
        return real_stage(model, **kwargs)

    monkeypatch.setattr(units, "phase2_stage_unit", record)
    kw = {**KW, "phase2": {**KW["phase2"], "inherit_weights": True}, "retrain": None}
    strategy = BiXNAS(**kw, out_dir=str(tmp_path), seed=0)
    strategy(space(), SequentialExecutionEngine())
    phase1_weights = tmp_path / "phase1" / "supernet.pt"
    assert seen[0] == strategy.phase1.result["weights"] == str(phase1_weights)
    state = torch.load(phase1_weights, weights_only=True)
    assert state and not any(k.endswith(".matrix") for k in state)
    assert all(w is not None and w.endswith("supernet.pt") for w in seen[1:]) and len(seen) == 5


def test_seedless_chain_resumed_mid_phase1_continues_phase1(tmp_path, monkeypatch):
    """BiXNAS(seed=None) draws its phase seeds at random; a resume must take them from the saved state,
    or the interrupted Phase 1 run would be restarted (or refused) under another seed."""
    real_unit = units.selection_matrix_unit

    def crash_after_one_epoch(model, **kwargs):
        real_unit(model, **{**kwargs, "epochs": 1})
        raise RuntimeError("simulated crash in Phase 1")

    kw = dict(phase1={"epochs": 2}, phase2={"samples": 2, "epochs": 1, "macs_input_size": (64, 64)}, retrain=None)
    monkeypatch.setattr(units, "selection_matrix_unit", crash_after_one_epoch)
    first = BiXNAS(**kw, out_dir=str(tmp_path), seed=None)
    with pytest.raises(RuntimeError, match="simulated crash in Phase 1"):
        first(space(), SequentialExecutionEngine())
    run = json.loads((tmp_path / "phase1" / "run.json").read_text())
    history = json.loads((tmp_path / "phase1" / "history.json").read_text())
    assert run["seed"] == first._phase_seeds[0] and len(history["history"]) == 1

    monkeypatch.setattr(units, "selection_matrix_unit", real_unit)
    for _ in range(3):  # a fresh seed=None draw would differ from the saved one
        resumed = BiXNAS(**kw, out_dir=str(tmp_path), seed=None)
        if resumed._phase_seeds != first._phase_seeds:
            break
    resumed(space(), SequentialExecutionEngine())
    assert resumed._phase_seeds == first._phase_seeds
    assert resumed.phase1.seed == first._phase_seeds[0]
    assert json.loads((tmp_path / "phase1" / "run.json").read_text())["seed"] == run["seed"]
    history = json.loads((tmp_path / "phase1" / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]  # epoch 1 was not trained again
    assert resumed.phase2.final_samples


@pytest.mark.parametrize("strategy_name", ["BiXNAS", "SelectionMatrix"])
def test_an_evaluator_without_data_is_an_error_before_any_training(strategy_name, tmp_path, count_units):
    from nni_bixnas.strategy import SelectionMatrix

    make = {"BiXNAS": lambda: BiXNAS(**KW, out_dir=str(tmp_path), seed=0),
            "SelectionMatrix": lambda: SelectionMatrix(epochs=1, out_dir=str(tmp_path))}[strategy_name]
    model_space = RawFormatModelSpace.from_model(BiONetPlusPlus(width=4, stem_width=4),
                                                 FunctionalEvaluator(train_and_report, batch_size=2))
    with pytest.raises(ValueError, match=f"{strategy_name}: no training data"):
        make()(model_space, SequentialExecutionEngine())
    assert count_units == [] and not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(retrain={"max_epochs": 0}), "retrain.max_epochs must be a positive int, got 0"),
    (dict(training={"batch_size": -2}), "training.batch_size must be a positive int, got -2"),
    (dict(training={"lr": "1e-3"}), "training.lr must be a finite number > 0, got '1e-3'"),
])
def test_training_values_of_the_chain_are_checked_when_it_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BiXNAS(**{**KW, **kwargs})


@pytest.mark.slow
def test_a_finished_retraining_seed_is_not_retrained_after_a_restart(tmp_path, monkeypatch, count_units):
    """The seeds are submitted together (``UnitRunner.run_many``) and each is saved as soon as it ends: a
    crash in seed 1 keeps seed 0, the resume retrains seeds 1 and 2 only, and the headline (mean ± std of the
    three) is the strategy's, in result.json; no seed's own result carries it."""
    real_unit = units.retrain_unit
    seeds_run = []

    def crash_on_seed_1(model, **kwargs):
        seeds_run.append(kwargs["training"]["seed"])
        if kwargs["training"]["seed"] == 1:
            raise RuntimeError("simulated crash in seed 1")
        return real_unit(model, **kwargs)

    monkeypatch.setattr(units, "retrain_unit", crash_on_seed_1)
    kw = {**KW, "retrain": {"seeds": [0, 1, 2], "max_epochs": 1}}
    with pytest.raises(RuntimeError, match="simulated crash in seed 1"):
        BiXNAS(**kw, out_dir=str(tmp_path), seed=0)(space(), SequentialExecutionEngine())
    assert seeds_run == [0, 1]
    state = torch.load(tmp_path / "bixnas_state.pt", weights_only=False)
    assert [r["seed"] for r in state["retrained"]] == [0]

    count_units.clear()
    seeds_run.clear()

    def note_seed(model, **kwargs):
        seeds_run.append(kwargs["training"]["seed"])
        return real_unit(model, **kwargs)

    monkeypatch.setattr(units, "retrain_unit", note_seed)
    strategy = BiXNAS(**kw, out_dir=str(tmp_path), seed=0)
    strategy(space(), SequentialExecutionEngine())
    assert seeds_run == [1, 2]
    assert [name for name, _ in count_units] == ["note_seed", "note_seed", "retrained_result_unit"]
    result = json.loads((tmp_path / "result.json").read_text())
    assert [r["seed"] for r in result["retrained"]] == [0, 1, 2]
    ious = [r["default"] for r in result["retrained"]]
    assert result["retrained_seeds"] == 3 and result["retrained_iou_mean"] == pytest.approx(sum(ious) / 3)
    assert not any("retrained_iou_mean" in r for r in result["retrained"])
    assert "over 3 seeds" in strategy.summary_line()
    assert strategy.headline_reported
    count_units.clear()  # a resume of the finished search reports no second headline
    strategy = BiXNAS(**kw, out_dir=str(tmp_path), seed=0)
    strategy(space(), SequentialExecutionEngine())
    assert count_units == []


def test_retraining_seeds_must_be_distinct():
    with pytest.raises(ValueError, match="distinct ints, got \\[0, 1, 0\\]"):
        BiXNAS(retrain={"seeds": [0, 1, 0]})


@pytest.mark.slow
def test_the_finalist_check_picks_the_finalist_that_trains_and_is_not_rerun(tmp_path, monkeypatch, count_units):
    """Phase 2 keeps two final nets; the check (stubbed: Phase 2's first "does not train") makes its second the
    winner, which is retrained, written to gene.txt and result.json; a resume trains no finalist again."""
    real_unit = units.retrain_unit
    checked = []

    def stub(model, **kwargs):
        if "finalists" not in str(kwargs.get("out_dir")):
            return real_unit(model, **kwargs)
        index = int(str(kwargs["out_dir"]).rsplit("/", 1)[-1])
        checked.append((index, kwargs["max_epochs"], kwargs["iou_kind"]))
        result = {"default": [0.01, 0.4][index], "final_iou": [0.0, 0.38][index]}
        nni.report_final_result(result)
        return result

    monkeypatch.setattr(units, "retrain_unit", stub)
    kw = {**KW, "phase2": {**KW["phase2"], "keep": (2, 2)}, "finalist_epochs": 3}
    strategy = BiXNAS(**kw, out_dir=str(tmp_path), seed=0)
    strategy(space(), SequentialExecutionEngine())
    phase2_order = strategy.phase2.final_samples
    assert len(phase2_order) == 2
    assert sorted(checked) == [(0, 3, "standalone, finalist check"), (1, 3, "standalone, finalist check")]
    assert strategy.final_samples == [phase2_order[1], phase2_order[0]]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["final_samples"][0] == phase2_order[1]
    assert result["finalists"]["order"] == [1, 0] and result["finalists"]["phase2_order"] == phase2_order
    assert [r["default"] for r in result["finalists"]["results"]] == [0.01, 0.4]
    assert Gene.parse((tmp_path / "gene.txt").read_text()).to_sample() == phase2_order[1]
    assert len(strategy.retrained) == 1
    state = torch.load(tmp_path / "bixnas_state.pt", weights_only=False)
    assert state["final_samples"][0] == phase2_order[1]

    checked.clear()
    count_units.clear()
    resumed = BiXNAS(**kw, out_dir=str(tmp_path), seed=0)
    resumed(space(), SequentialExecutionEngine())
    assert checked == [] and count_units == []
    assert resumed.final_samples[0] == phase2_order[1]
