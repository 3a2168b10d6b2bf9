"""ProgressiveEvolution (BiX-NAS Phase 2) on a tiny BiO-Net++: stages, sampling, selection, resume, errors."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn as nn
from nni.mutable import Categorical
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import RawFormatModelSpace

from nni_bixnas.space import BiONetPlusPlus, Gene, SkipChoice
from nni_bixnas.strategy import units as units_module
from nni_bixnas.strategy.pareto import pareto_front, select_parents
from nni_bixnas.strategy.progressive_evolution import ProgressiveEvolution
from nni_bixnas.strategy.records import StageRecord
from nni_bixnas.strategy.runner import UnitRunner
from nni_bixnas.strategy.supernet import member_latency as latency_module
from nni_bixnas.strategy.supernet.phase2_task import Phase2Task, default_milestones
from nni_bixnas.strategy.supernet.spaces import space_reference
from nni_bixnas.strategy.units import phase2_stage_unit
from nni_bixnas.training import train_and_report

DATA = "default:n=8,size=32"  # 6 training tiles: no batch of one (1x1 BatchNorm at 32 px)


def executable(space: nn.Module) -> RawFormatModelSpace:
    return RawFormatModelSpace.from_model(space, FunctionalEvaluator(train_and_report, data=DATA, batch_size=2))


def tiny_space(**kw) -> BiONetPlusPlus:
    return BiONetPlusPlus(**{"width": 4, "stem_width": 4, "iterations": 2, "max_k": 5, **kw})


def stage_weights(tmp_path):
    """The SuperNet files stages 3 and 2 left, in the order the search made them."""
    return [str(p) for p in sorted((tmp_path / "phase2").glob("stage_[32]-*/supernet.pt"), reverse=True)]


def strategy(tmp_path, **kw) -> ProgressiveEvolution:
    options = dict(samples=2, epochs=1, seed=0, macs_input_size=(32, 32), out_dir=str(tmp_path / "phase2"))
    return ProgressiveEvolution(**{**options, **kw})


@pytest.fixture
def units(monkeypatch):
    """Count unit submissions (and their kwargs); ``fail_at`` makes the n-th submission crash."""
    calls = []
    state = {"fail_at": None}
    real_run = UnitRunner.run

    def run(self, function, sample, **kwargs):
        calls.append(kwargs)
        if state["fail_at"] == len(calls):
            raise RuntimeError("simulated crash")
        return real_run(self, function, sample, **kwargs)

    monkeypatch.setattr(UnitRunner, "run", run)
    return calls, state


def test_search_runs_every_stage_and_selects_from_the_front(tmp_path, units):
    calls, _ = units
    space = executable(tiny_space())
    evo = strategy(tmp_path, keep=(2, 1), inherit_weights=True)
    evo(space, SequentialExecutionEngine())
    assert calls[0]["init_weights"] is None
    assert [c["init_weights"] for c in calls[1:]] == stage_weights(tmp_path)

    assert [h.stage for h in evo.history] == [3, 2, 1]
    assert [c["stage"] for c in calls] == [3, 2, 1]
    parents = [{l: list(m.candidates) for l, m in space.simplify().items()}]  # every block reads every candidate
    for h, kwargs in zip(evo.history, calls):
        population = h.population
        assert 1 <= len(population) <= 2 * len(parents)  # s skip sets x parents, less duplicate nets
        assert kwargs["training"]["lr"] == pytest.approx(1e-3 / len(population))  # lr_per_member
        assert kwargs["members"] == [p.sample for p in population]
        assert kwargs["member_macs"] == [p.macs for p in population]  # counted by the strategy, not the trial
        for member in kwargs["members"]:
            assert space.contains(member)
        # every member computes its own net; a parent's own net only where that parent has no new member
        keys = [evo.effective_key(m) for m in kwargs["members"]]
        assert len(set(keys)) == len(keys)
        for parent in parents:
            if evo.effective_key(parent) in keys:
                assert sum(all(m[l] == parent[l] for l in parent if l not in h.skip_sets[0])
                           for m in kwargs["members"]) == 1
        keep = 2 if h.stage == 3 else 1
        assert h.kept == select_parents([p.iou for p in population], [p.macs for p in population], keep,
                                        selection="one_se", image_ious=[p.image_iou for p in population])
        assert all(len(p.image_iou) == len(population[0].image_iou) > 0 for p in population)
        assert len(h.kept) == min(keep, len(population))
        assert all(p.macs > 0 and 0.0 <= p.iou <= 1.0 and p.stage == h.stage for p in population)
        parents = [p.sample for p in h.parents]
    assert evo.final_samples == [p.sample for p in evo.history[-1].parents]
    models = list(evo.list_models())
    assert [m.sample for m in models] == evo.final_samples
    assert [m.metric for m in models] == evo.final_scores() == sorted(evo.final_scores(), reverse=True)
    genes = evo.final_genes()
    assert isinstance(genes[0], Gene) and genes[0].to_sample() == {k: v for k, v in evo.final_samples[0].items()}
    # a stage's kept parents carry the searched choices into the next stages
    last = evo.history[0].parents[0].sample
    assert any(all(m[l] == last[l] for l in last if l.startswith("dec_1")) for m in calls[1]["members"])


def test_resume_after_the_last_finished_stage(tmp_path, units):
    calls, state = units
    state["fail_at"] = 3
    first = strategy(tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        first(executable(tiny_space()), SequentialExecutionEngine())
    saved = first.state_dict()
    assert saved["stage_index"] == 2 and len(saved["history"]) == 2
    assert len(calls) == 3

    state["fail_at"] = None
    second = strategy(tmp_path, seed=123)  # the RNG state comes from the state dict
    second.load_state_dict(saved)
    second(executable(tiny_space()), SequentialExecutionEngine())
    assert len(calls) == 4  # only the last stage ran again
    assert calls[3]["stage"] == 1 and calls[3]["members"] == calls[2]["members"]
    assert [h.to_dict() for h in second.history[:2]] == saved["history"] and len(second.history) == 3
    assert all(isinstance(h, StageRecord) for h in second.history)
    assert second.final_samples


def test_sampling_is_private_distinct_and_within_bounds():
    space = executable(tiny_space())
    candidates = {"dec_1_0": [0, 2, 4], "dec_1_1": [1], "enc_1_3": [0, 1, 3]}
    evo = ProgressiveEvolution(candidates=candidates, samples=6, seed=5)
    evo.initialize(space, SequentialExecutionEngine())
    torch.manual_seed(0)
    before = torch.rand(1)
    sets, members = evo.sample_population(3)
    assert len(sets) == 6 and len({str(sorted(s.items())) for s in sets}) == 6
    assert len(members) == 6 and len({evo.effective_key(m) for m in members}) == 6
    for s in sets:
        assert sorted(s) == ["dec_1_0", "dec_1_1", "dec_1_2", "dec_1_3"]
        assert set(s["dec_1_0"]) <= {0, 2, 4} and s["dec_1_1"] == [1]
        assert all(1 <= len(v) <= 5 and v == sorted(set(v)) and set(v) <= set(range(5)) for v in s.values())
    again = ProgressiveEvolution(candidates=candidates, samples=6, seed=5)
    again.initialize(executable(tiny_space()), SequentialExecutionEngine())
    assert again.sample_population(3) == (sets, members)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), before)
    # unsearched stages start from every candidate
    assert evo.parents[0]["enc_1_3"] == [0, 1, 3] and evo.parents[0]["dec_1_1"] == [1]
    # the narrowed space is what the strategy searches and freezes: max_k is |candidates|
    assert evo.model_space.simplify()["dec_1_0"].max_k == 3


def test_keep_sequential_last_keeps_index_0_in_the_last_stage_only():
    labels = [f"{kind}_{it}_{level}" for kind, it in (("dec", 1), ("enc", 1), ("dec", 0)) for level in range(4)]
    space = executable(tiny_space(max_k=3, candidates={label: [0, 1, 2] for label in labels}))
    evo = ProgressiveEvolution(samples=7, seed=0, keep_sequential_last=True)
    evo.initialize(space, SequentialExecutionEngine())
    assert all(0 in v for s in evo.sample_population(3)[0] for v in s.values())
    assert any(0 not in v for s in evo.sample_population(2)[0] for v in s.values())
    plain = ProgressiveEvolution(samples=7, seed=0)
    plain.initialize(executable(tiny_space(max_k=3, candidates=dict(space.model_space.trace_kwargs["candidates"]))),
                     SequentialExecutionEngine())
    assert any(0 not in v for s in plain.sample_population(3)[0] for v in s.values())


def test_single_candidate_blocks_are_fixed_and_an_empty_stage_is_skipped(caplog, tmp_path, units):
    calls, _ = units
    narrow = {l: [0] for l in ["dec_1_0", "dec_1_1", "dec_1_2", "dec_1_3"]}
    evo = ProgressiveEvolution(candidates=narrow, samples=4, seed=0, max_redraws=5, epochs=1, macs_input_size=(32, 32),
                               out_dir=str(tmp_path))
    evo.initialize(executable(tiny_space()), SequentialExecutionEngine())
    _, keys, position, *_ = evo._random_state.get_state()
    keys = keys.copy()
    assert evo.sample_population(3) == ([], [])  # the only choice is the parent's own net
    _, keys_after, position_after, *_ = evo._random_state.get_state()
    assert (keys_after == keys).all() and position_after == position  # fixed blocks are not drawn at all
    evo._stages = [3]  # search only stage 3
    with caplog.at_level(logging.INFO):
        evo.run()
    assert calls == [] and "nothing to compare" in caplog.text
    assert evo.final_samples == evo.parents and evo.final_samples[0]["dec_1_0"] == [0]


def test_dead_blocks_do_not_make_distinct_members(caplog):
    """Members that differ only in blocks no live block reads are one net: they are drawn once."""
    # Stage 1 (the decoders of iteration 0) reaches the output only through the skips (indices 1..4) of the
    # encoders of iteration 1. With every block of iteration 1 reading its sequential input only, no stage-1
    # block is live, so every member computes the parent's net.
    later = {f"{k}_1_{l}": [0] for k in ("enc", "dec") for l in range(4)}
    evo = ProgressiveEvolution(candidates=later, samples=5, seed=0, max_redraws=20)
    evo.initialize(executable(tiny_space()), SequentialExecutionEngine())
    with caplog.at_level(logging.INFO):
        assert evo.sample_population(1) == ([], [])
    assert "only 0 distinct effective net(s)" in caplog.text
    # with one encoder reading the deepest decoder of stage 1, exactly the blocks up the chain matter
    reads = {**later, "enc_1_0": [1]}  # index 1 = dec_0_0 (the deepest decoder of iteration 0)
    evo = ProgressiveEvolution(candidates=reads, samples=50, seed=0, max_redraws=200)
    evo.initialize(executable(tiny_space()), SequentialExecutionEngine())
    _, members = evo.sample_population(1)
    live = {evo.effective_key(m) for m in members}
    assert len(live) == len(members)
    # dec_0_0 is the only live block of stage 1 (level 0 reads the bridge; index 0 keeps it at level 0)
    assert all(set(dict(k)) >= {"dec_0_0"} and not set(dict(k)) & {"dec_0_1", "dec_0_2", "dec_0_3"} for k in live)
    choices = {dict(k)["dec_0_0"] for k in live}
    assert len(members) == len(choices) == 31 - 1  # every non-empty subset of 5 inputs but the parent's


def test_a_parent_whose_stage_blocks_are_dead_stays_a_candidate():
    """Parents whose blocks of the stage are all dead make no new member; they stay in the population."""
    reads = {**{f"{k}_1_{l}": [0] for k in ("enc", "dec") for l in range(4)}, "enc_1_0": [0, 1]}
    evo = ProgressiveEvolution(candidates=reads, samples=4, seed=0, max_redraws=20)
    evo.initialize(executable(tiny_space()), SequentialExecutionEngine())
    live, dead = {**evo.parents[0], "enc_1_0": [1]}, {**evo.parents[0], "enc_1_0": [0]}  # dead: stage 1 unread
    evo.parents = [live, dead]
    skip_sets, members = evo.sample_population(1)
    keys = [evo.effective_key(m) for m in members]
    assert len(skip_sets) == 4 and len(set(keys)) == len(keys)
    assert keys.count(evo.effective_key(dead)) == 1  # the dead parent itself, once
    assert members[-1] == {**dead, **skip_sets[0]}  # parent-major: after the live parent's members
    assert len(members) == 4 + 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(samples=0), "samples must be a positive int"),
        (dict(epochs=0), "epochs must be a positive int"),
        (dict(keep=(3,)), "keep must be"),
        (dict(keep=(3, 0)), "keep must be"),
        (dict(step="fused"), "unknown step 'fused'; expected one of 'low_memory', 'plain', 'naive', 'batched'"),
        (dict(mode="greedy"), "unknown mode 'greedy'"),
        (dict(macs_input_size=(512,)), "macs_input_size"),
        (dict(milestones=[0]), "milestones"),
        (dict(selection="cheap"), "unknown selection 'cheap'; expected one of 'iou', 'one_se'"),
        (dict(selection_se=-1), "selection_se must be a number >= 0, got -1"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProgressiveEvolution(**kwargs)


class NoSkips(ModelSpace):
    def __init__(self):
        super().__init__()
        self.width = self.add_mutable(Categorical([2, 4], label="width"))
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return self.conv(x)


class NoStage(ModelSpace):
    def __init__(self):
        super().__init__()
        self.skip = SkipChoice(3, label="b0")
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return self.conv(self.skip([x, x, x]))


class NoHeadTail(ModelSpace):
    def __init__(self):
        super().__init__()
        self.skip = SkipChoice(3, max_k=3, label="b0", stage=0)
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return self.conv(self.skip([x, x, x]))


@pytest.mark.parametrize(
    "space, kwargs, message",
    [
        (lambda: NoSkips(), {}, "no skip choices"),
        (lambda: NoStage(), {}, "b0 have no stage index"),
        (lambda: NoHeadTail(), {}, "NoHeadTail does not implement the Phase 2 head/tail protocol"),
        (lambda: tiny_space(), dict(candidates={"dec_1_0": []}), "candidate set of dec_1_0 would be empty"),
        (lambda: tiny_space(), dict(candidates={"bogus": [0]}), "unknown skip choice"),
        (lambda: tiny_space(candidates={"dec_1_0": [0, 1]}), dict(candidates={"dec_1_0": [0, 4]}), "not among"),
        (lambda: tiny_space(max_k=3), {}, "5 candidates but max_k=3"),
    ],
)
def test_initialize_errors_before_any_training(space, kwargs, message, units):
    calls, _ = units
    evo = ProgressiveEvolution(**kwargs)
    with pytest.raises(ValueError, match=message):
        evo(executable(space()), SequentialExecutionEngine())
    assert calls == []


def test_naive_mode_unit_scores_every_member(tmp_path):
    space = tiny_space()
    members = [dict(m) for m in [{l: [0] for l in space.skip_choices()}, {l: [0, 1] for l in space.skip_choices()}]]
    ref = space_reference(executable(space))
    result = phase2_stage_unit(space=ref, stage=2, members=members, epochs=1, mode="naive", training={"data": DATA},
                               macs_input_size=(32, 32), out_dir=str(tmp_path), progress=False)
    assert result["stage"] == 2 and result["phase"] == 2
    assert [p["sample"] for p in result["population"]] == members
    assert result["population"][1]["macs"] > result["population"][0]["macs"]
    assert result["front"] and result["default"] == max(p["iou"] for p in result["population"])


def test_learning_rate_schedule():
    space = tiny_space()
    task = Phase2Task(space, 1, [{l: [0] for l in space.skip_choices()}], lr=1e-3, milestones=(10, 20, 30))
    rates = [task.lr_at(e) for e in (0, 9, 10, 19, 20, 30, 39)]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6, 1e-6])


def test_default_milestones():
    assert default_milestones(40) == (10, 20, 30)
    assert default_milestones(4) == (1, 2, 3)
    assert default_milestones(1) == ()


def test_tied_ious_keep_a_full_population_and_warn(tmp_path, monkeypatch, caplog):
    """All members tie (a stage too short to rank them): the front is the cheapest member alone; the
    other parents are filled by IoU, the front size is logged against keep, and a warning says why."""
    def tied_unit(model=None, *, members, stage, **kwargs):
        population = [{"sample": m, "iou": 0.25, "best_epoch": 1, "macs": 100 + i} for i, m in enumerate(members)]
        result = {"default": 0.25, "stage": stage, "population": population, "front": [0], "phase": 2,
                  "weights": None, "seconds": 0.0}
        import nni
        nni.report_final_result(result)
        return result

    monkeypatch.setattr(units_module, "phase2_stage_unit", tied_unit)
    evo = strategy(tmp_path, samples=4, keep=(3, 2))
    with caplog.at_level(logging.INFO):
        evo(executable(tiny_space()), SequentialExecutionEngine())
    first = evo.history[0]
    assert first.kept == [0, 1, 2]  # the cheapest (the front), then by IoU (tied) and MACs
    assert [len(h.kept) for h in evo.history] == [3, 2, 2]
    assert "Pareto front: 1 member(s) for keep=3; the other parents are the best remaining by IoU" in caplog.text
    assert "the members' IoUs span only 0" in caplog.text


@pytest.mark.parametrize("evaluator_kwargs", [dict(), dict(batch_size=2)])
def test_no_data_is_an_error_before_any_training(evaluator_kwargs, units):
    calls, _ = units
    space = RawFormatModelSpace.from_model(tiny_space(), FunctionalEvaluator(train_and_report, **evaluator_kwargs))
    with pytest.raises(ValueError, match="ProgressiveEvolution: no training data.*data='default'"):
        ProgressiveEvolution(samples=2, epochs=1)(space, SequentialExecutionEngine())
    assert calls == []


def test_stage_checkpoint_state_loads_weights_only(tmp_path):
    """Members keyed by NNI's label objects (what simplify() yields) are saved as plain strings, so an
    interrupted stage's checkpoint loads with weights_only=True when the stage resumes."""
    space = executable(tiny_space())
    labels = list(space.simplify())
    assert type(labels[0]) is not str  # nni.mutable.utils.label, a str subclass
    members = [{label: [0] for label in labels}]
    task = Phase2Task(tiny_space(), 3, members)
    checkpoint = {}
    task.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "stage.ckpt")
    loaded = torch.load(tmp_path / "stage.ckpt", weights_only=True)
    assert loaded["phase2"]["members"] == [{str(label): [0] for label in labels}]
    task.on_load_checkpoint(loaded)  # the same population: accepted


def test_inherit_weights_starts_the_first_stage_from_initial_weights(tmp_path, units):
    calls, _ = units
    torch.save(tiny_space().state_dict(), tmp_path / "phase1.pt")
    evo = strategy(tmp_path, inherit_weights=True, initial_weights=str(tmp_path / "phase1.pt"))
    evo(executable(tiny_space()), SequentialExecutionEngine())
    assert calls[0]["init_weights"] == str(tmp_path / "phase1.pt")
    assert [c["init_weights"] for c in calls[1:]] == stage_weights(tmp_path)
    # without inherit_weights, initial_weights is ignored
    fresh = strategy(tmp_path / "fresh", initial_weights=str(tmp_path / "phase1.pt"))
    fresh(executable(tiny_space()), SequentialExecutionEngine())
    assert all(c["init_weights"] is None for c in calls[3:])


def test_a_spent_budget_stops_the_search_after_the_last_stage_it_allowed(tmp_path, units, caplog):
    calls, _ = units
    evo = strategy(tmp_path)
    with caplog.at_level(logging.WARNING):
        evo(executable(tiny_space()), SequentialExecutionEngine(max_model_count=2))
    assert [h.stage for h in evo.history] == [3, 2] and not evo.final_samples
    assert len(calls) == 3  # the third unit found no budget and was not submitted
    assert "Phase 2 stops before stage 1: no budget left for unit phase2_stage_unit" in caplog.text
    assert evo.state_dict()["stage_index"] == 2  # a resume with more budget continues at stage 1


def test_list_models_sorts_by_metric_and_limits(tmp_path, units):
    evo = strategy(tmp_path, keep=(3, 3), samples=3)
    with pytest.raises(RuntimeError, match="has not been run"):
        list(evo.list_models())
    evo(executable(tiny_space()), SequentialExecutionEngine())
    scores = evo.final_scores()
    assert [m.metric for m in evo.list_models()] == sorted(scores, reverse=True)
    assert [m.metric for m in evo.list_models(sort=False)] == scores
    best = max(range(len(scores)), key=lambda i: scores[i])
    assert [m.sample for m in evo.list_models(limit=1)] == [evo.final_samples[best]]
    assert [m.sample for m in evo.list_models(sort=False, limit=1)] == evo.final_samples[:1]  # the pick


@pytest.mark.parametrize("retries", [0, 1])
def test_a_failed_stage_job_is_submitted_again_unit_retries_times(tmp_path, monkeypatch, caplog, retries):
    """A stage whose trial fails (e.g. killed) runs again and resumes; with unit_retries=0 the search fails."""
    from nni_bixnas.strategy.runner import UnitFailed

    real_stage, failures = units_module.phase2_stage_unit, []

    def flaky(model=None, **kwargs):
        if kwargs["stage"] == 2 and not failures:
            failures.append(kwargs["stage"])
            raise RuntimeError("simulated killed trial")
        return real_stage(model, **kwargs)

    monkeypatch.setattr(units_module, "phase2_stage_unit", flaky)
    evo = strategy(tmp_path, unit_retries=retries)
    engine = SequentialExecutionEngine(continue_on_failure=True)  # a failed trial, as a training service sees it
    if retries == 0:
        with pytest.raises(UnitFailed, match="unit flaky ended with status failed and no result"):
            evo(executable(tiny_space()), engine)
        assert [h.stage for h in evo.history] == [3]
        return
    with caplog.at_level(logging.WARNING):
        evo(executable(tiny_space()), engine)
    assert [h.stage for h in evo.history] == [3, 2, 1] and evo.final_samples
    assert "unit flaky ended with status failed and no result; submitting it again (retry 1 of 1)" in caplog.text


def test_num_threads_of_the_training_settings_reach_every_stage(tmp_path, units):
    calls, _ = units
    evo = strategy(tmp_path, training={"num_threads": 1})
    evo(executable(tiny_space()), SequentialExecutionEngine())
    assert [c["training"]["num_threads"] for c in calls] == [1, 1, 1]


def test_a_stage_unit_given_member_macs_counts_none_and_reports_them(tmp_path, monkeypatch):
    space = tiny_space()
    members = [dict(m) for m in [{l: [0] for l in space.skip_choices()}, {l: [0, 1] for l in space.skip_choices()}]]
    ref = space_reference(executable(space))
    counted = phase2_stage_unit(space=ref, stage=2, members=members, epochs=1, training={"data": DATA},
                                macs_input_size=(32, 32), out_dir=str(tmp_path / "a"), progress=False)
    monkeypatch.setattr(units_module, "count_member_macs", lambda *a, **k: pytest.fail("the unit counted MACs"))
    given = phase2_stage_unit(space=ref, stage=2, members=members, epochs=1, training={"data": DATA},
                              macs_input_size=(32, 32), member_macs=[p["macs"] for p in counted["population"]],
                              out_dir=str(tmp_path / "b"), progress=False)
    assert given["population"] == counted["population"] and given["front"] == counted["front"]
    with pytest.raises(ValueError, match="member_macs has 1 values for 2 members"):
        phase2_stage_unit(space=ref, stage=2, members=members, epochs=1, training={"data": DATA}, member_macs=[1],
                          out_dir=str(tmp_path / "c"), progress=False)


# -- objective='latency' --------------------------------------------------------------------------------
def net_of(model) -> str:
    return json.dumps(model.gene.live_choices(), sort_keys=True)


@pytest.fixture
def fake_clock(monkeypatch):
    """Replace the latency clock by fixed values that order the nets against their size (so the selection on
    latency differs from the one on MACs); returns the nets it timed, in order."""
    timed = []

    def forward_ms(model, inputs, repeats, warmup):
        assert not model.training and tuple(inputs.shape) == (1, 3, 32, 32) and inputs.device.type == "cpu"
        timed.append(net_of(model))
        return 1e6 / sum(p.numel() for p in model.parameters())

    monkeypatch.setattr(latency_module, "forward_ms", forward_ms)
    return timed


def test_latency_objective_times_each_net_once_and_selects_on_latency(tmp_path, units, fake_clock):
    calls, _ = units
    space = tiny_space()
    evo = strategy(tmp_path, objective="latency", latency_device="cpu", keep=(2, 1))
    evo(executable(space), SequentialExecutionEngine())
    assert [h.stage for h in evo.history] == [3, 2, 1] and evo.final_samples
    nets = {net_of(space.freeze(m.sample)) for h in evo.history for m in h.population}
    assert sorted(fake_clock) == sorted(nets)  # every distinct net timed, once
    for h, kwargs in zip(evo.history, calls):
        population = h.population
        latency = [m.latency_ms for m in population]
        assert kwargs["member_latency"] == latency  # timed by the strategy, passed to the unit, reported back
        assert latency == [1e6 / sum(p.numel() for p in space.freeze(m.sample).parameters()) for m in population]
        ious = [m.iou for m in population]
        assert h.front == pareto_front([[1 - iou, ms] for iou, ms in zip(ious, latency)])
        assert h.kept == select_parents(ious, latency, 2 if h.stage == 3 else 1)
    assert evo.state_dict()["latency_ms"] and set(evo.state_dict()["latency_ms"].values()) == {
        m.latency_ms for h in evo.history for m in h.population}


def test_a_resumed_latency_search_reuses_its_timings(tmp_path, units, fake_clock):
    calls, state = units
    state["fail_at"] = 3  # stage 1's members are timed, then its job crashes
    first = strategy(tmp_path, objective="latency", latency_device="cpu")
    with pytest.raises(RuntimeError, match="simulated crash"):
        first(executable(tiny_space()), SequentialExecutionEngine())
    saved = json.loads(json.dumps({k: v for k, v in first.state_dict().items() if k != "random_state"}))
    saved["random_state"] = first.state_dict()["random_state"]
    timed_before = len(fake_clock)
    state["fail_at"] = None
    second = strategy(tmp_path, objective="latency", latency_device="cpu")
    second.load_state_dict(saved)
    second(executable(tiny_space()), SequentialExecutionEngine())
    assert len(calls) == 4 and calls[3]["member_latency"] == calls[2]["member_latency"]
    assert len(fake_clock) == timed_before  # the redone stage's nets were timed before the crash: not again


def test_a_stage_unit_given_member_latency_reports_it_and_fronts_on_it(tmp_path):
    space = tiny_space()
    members = [dict(m) for m in [{l: [0] for l in space.skip_choices()}, {l: [0, 1] for l in space.skip_choices()}]]
    ref = space_reference(executable(space))
    # the bigger net is the faster one: whatever the IoUs, the fronts of (IoU, latency) and (IoU, MACs) differ
    result = phase2_stage_unit(space=ref, stage=2, members=members, epochs=1, training={"data": DATA},
                               macs_input_size=(32, 32), member_latency=[2.0, 1.0], out_dir=str(tmp_path / "a"),
                               progress=False)
    population = result["population"]
    assert [p["latency_ms"] for p in population] == [2.0, 1.0] and population[0]["macs"] < population[1]["macs"]
    assert result["front"] == pareto_front([[1 - p["iou"], p["latency_ms"]] for p in population])
    assert result["front"] != pareto_front([[1 - p["iou"], p["macs"]] for p in population])
    with pytest.raises(ValueError, match="member_latency has 1 values for 2 members"):
        phase2_stage_unit(space=ref, stage=2, members=members, epochs=1, training={"data": DATA}, member_latency=[1.0],
                          out_dir=str(tmp_path / "b"), progress=False)


def test_the_selection_follows_latency_instead_of_macs(tmp_path, monkeypatch):
    """With latency the inverse of MACs, IoUs made so the second-best member is cheaper than the best in MACs
    (so on the MACs front) but slower (so off the latency front): each objective keeps a different second."""
    from nni_bixnas.profile import count_complexity

    monkeypatch.setattr(latency_module, "forward_ms",
                        lambda model, inputs, r, w: 1e12 / count_complexity(model, tuple(inputs.shape[-2:])).macs)

    def fixed_unit(model=None, *, members, stage, member_macs, member_latency=None, **kwargs):
        by_macs = sorted(range(len(members)), key=lambda i: member_macs[i])
        ious = [0.5 - 0.1 * i for i in range(len(members))]
        if len(members) >= 3:  # the middle net is the best, the next smaller the second, the biggest the third
            middle = len(members) // 2
            ious = [0.1] * len(members)
            for rank, iou in ((middle, 0.9), (middle - 1, 0.8), (len(members) - 1, 0.7)):
                ious[by_macs[rank]] = iou
        costs = member_macs if member_latency is None else member_latency
        population = [{"sample": m, "iou": ious[i], "best_epoch": 1, "macs": member_macs[i],
                       **({} if member_latency is None else {"latency_ms": member_latency[i]})}
                      for i, m in enumerate(members)]
        result = {"default": max(ious), "stage": stage, "population": population, "phase": 2, "weights": None,
                  "front": pareto_front([[1 - iou, c] for iou, c in zip(ious, costs)]), "seconds": 0.0}
        import nni
        nni.report_final_result(result)
        return result

    monkeypatch.setattr(units_module, "phase2_stage_unit", fixed_unit)
    kept = {}
    for objective in ("macs", "latency"):
        evo = strategy(tmp_path / objective, samples=3, keep=(2, 1), objective=objective, latency_device="cpu")
        evo(executable(tiny_space()), SequentialExecutionEngine())
        first = evo.history[0]
        macs = [m.macs for m in first.population]
        assert len(set(macs)) == len(macs) == 3  # the same three members of distinct MACs under both objectives
        by_macs = sorted(range(3), key=lambda i: macs[i])
        kept[objective] = [by_macs.index(i) for i in first.kept]  # as ranks by MACs
    assert kept == {"macs": [1, 0], "latency": [1, 2]}
