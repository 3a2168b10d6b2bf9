"""Latency as a Phase 2 objective: the timer, the per-net cache, the strategy's options and state, the export.

No test depends on wall time: the clock or the timer is replaced by fixed values.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace

import test_experiment_export as fabricated
from nni_bixnas.experiment import export as export_module
from nni_bixnas.experiment.export import candidates, export_experiment, read_experiment
from nni_bixnas.experiment.stage_plot import Panel, cost_axis
from nni_bixnas.space import BiONetPlusPlus
from nni_bixnas.strategy.progressive_evolution import ProgressiveEvolution
from nni_bixnas.strategy.records import Member, StageRecord
from nni_bixnas.strategy.supernet import member_latency as latency_module
from nni_bixnas.strategy.supernet.member_latency import check_device, forward_ms, member_latency, resolve_device
from nni_bixnas.strategy.supernet.spaces import space_reference
from nni_bixnas.training import train_and_report

DATA = "default:n=8,size=32"


def tiny_space() -> BiONetPlusPlus:
    return BiONetPlusPlus(width=4, stem_width=4, iterations=2, max_k=5)


def executable(space, **training) -> RawFormatModelSpace:
    return RawFormatModelSpace.from_model(space, FunctionalEvaluator(train_and_report, data=DATA, **training))


# -- the clock ------------------------------------------------------------------------------------------
class Probe(nn.Module):
    """Records, per forward, whether gradients were enabled and whether it was in training mode."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append((torch.is_grad_enabled(), self.training))
        return x


def test_forward_ms_is_the_median_of_the_timed_forwards_after_the_warm_up(monkeypatch):
    # (start, end) of each timed forward: 2, 5 and 3 ms (the warm-up forward is not timed)
    clock = iter([10.0, 10.002, 20.0, 20.005, 30.0, 30.003])
    monkeypatch.setattr(latency_module, "perf_counter", lambda: next(clock))
    probe = Probe().eval()
    assert forward_ms(probe, torch.zeros(1), repeats=3, warmup=1) == pytest.approx(3.0)
    assert probe.calls == [(False, False)] * 4  # no_grad, eval mode, warm-up included


# -- the per-net cache ----------------------------------------------------------------------------------
def test_each_distinct_net_is_timed_once_at_each_size():
    space = tiny_space()
    ref = space_reference(executable(space))
    plain = {label: [0] for label in space.skip_choices()}
    dead = {**plain, "dec_0_1": [0, 1]}  # no block of iteration 1 reads stage 1: the same net as `plain`
    other = {**plain, "dec_1_0": [0, 1]}
    seen = []

    def timer(model, inputs, repeats, warmup):
        seen.append((model.training, tuple(inputs.shape), inputs.device.type, repeats, warmup))
        return 10.0 * len(seen)

    cache = {}
    def timed(sample, size=(32, 32)):
        return member_latency(space, ref, sample, size, repeats=4, warmup=1, timer=timer, cache=cache)

    assert timed(plain) == 10.0 and timed(dead) == 10.0 and timed(other) == 20.0 and timed(plain) == 10.0
    assert seen == [(False, (1, 3, 32, 32), "cpu", 4, 1)] * 2  # eval mode, batch 1, the net's channels
    assert timed(plain, (64, 64)) == 30.0 and len(seen) == 3 and len(cache) == 3  # another size: timed again


def test_without_a_timer_or_cache_the_module_clock_and_cache_are_used(monkeypatch):
    space = tiny_space()
    ref = space_reference(executable(space))
    calls = []
    monkeypatch.setattr(latency_module, "forward_ms", lambda model, inputs, repeats, warmup: calls.append(1) or 7.5)
    monkeypatch.setattr(latency_module, "_LATENCY_CACHE", {})
    sample = {label: [0, 1] for label in space.skip_choices()}
    assert [member_latency(space, ref, sample, (32, 32)) for _ in range(2)] == [7.5, 7.5]
    assert calls == [1] and list(latency_module._LATENCY_CACHE.values()) == [7.5]


@pytest.mark.parametrize("value", ["tpu", "", 3, "cuda:x"])
def test_check_device_names_what_it_accepts(value):
    with pytest.raises(ValueError) as err:
        check_device("latency_device", value)
    assert str(err.value) == f"latency_device must be None, 'cpu', 'cuda' or 'cuda:<index>', got {value!r}"


def test_check_device_accepts_cpu_cuda_and_none():
    assert [check_device("d", v) for v in (None, "cpu", "cuda", "cuda:1")] == [None, "cpu", "cuda", "cuda:1"]


def test_the_default_device_is_where_the_training_runs(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == "cuda" and resolve_device(None, "auto") == "cuda"
    assert resolve_device(None, "cpu") == "cpu" and resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_device(None, "gpu") == "cpu"
    with pytest.raises(ValueError) as err:
        resolve_device("cuda")
    assert str(err.value) == ("latency_device 'cuda' is not available in this process (0 CUDA device(s) visible); "
                              "set latency_device='cpu' or None")


def test_an_unavailable_latency_device_is_an_error_before_any_training(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="latency_device 'cuda:0' is not available"):
        ProgressiveEvolution(objective="latency", latency_device="cuda:0").initialize(
            executable(tiny_space()), SequentialExecutionEngine())
    evo = ProgressiveEvolution(objective="latency")
    evo.initialize(executable(tiny_space(), accelerator="cpu"), SequentialExecutionEngine())
    assert evo._device == "cpu"


# -- the strategy's options and state -------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(objective="time"), "unknown objective 'time'; expected one of 'macs', 'latency'"),
    (dict(latency_repeats=0), "latency_repeats must be a positive int, got 0"),
    (dict(latency_warmup=-1), "latency_warmup must be a non-negative int, got -1"),
    (dict(latency_input_size=(32,)), "latency_input_size must be (height, width) of positive ints or None, got (32,)"),
    (dict(latency_device="tpu"), "latency_device must be None, 'cpu', 'cuda' or 'cuda:<index>', got 'tpu'"),
])
def test_option_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        ProgressiveEvolution(**kwargs)
    assert str(err.value) == message


def test_extra_repr_shows_the_objective_and_the_latency_options():
    common = ("samples=15, epochs=40, keep=(3, 2), step='low_memory', mode='fair', lr_per_member=True, "
              "inherit_weights=False, initial_weights=None, keep_sequential_last=False, member_bn='recalibrate', "
              "selection='one_se', selection_se=1.0")
    assert ProgressiveEvolution().extra_repr() == common + ", objective='macs'"
    timed = ProgressiveEvolution(objective="latency", macs_input_size=(64, 64), latency_repeats=3, latency_device="cpu")
    assert timed.extra_repr() == (common + ", objective='latency', latency_input_size=[64, 64], latency_repeats=3, "
                                  "latency_warmup=2, latency_device='cpu'")
    assert ProgressiveEvolution(objective="latency", latency_input_size=(32, 48)).latency.input_size == [32, 48]


def test_state_dict_keeps_the_objective_and_the_timings():
    first = ProgressiveEvolution(objective="latency", seed=0)
    state = first.state_dict()
    assert state["objective"] == "latency" and state["latency_ms"] == {}
    second = ProgressiveEvolution(objective="latency", seed=1)
    second.load_state_dict({**state, "latency_ms": {"abc": 2.5}})
    assert second.state_dict()["latency_ms"] == {"abc": 2.5}
    with pytest.raises(ValueError) as err:
        ProgressiveEvolution().load_state_dict(state)
    assert str(err.value) == "the state searched with objective 'latency', but this strategy has objective 'macs'"
    older = {k: v for k, v in ProgressiveEvolution().state_dict().items() if k not in ("objective", "latency_ms")}
    ProgressiveEvolution().load_state_dict(older)  # a state from before the option: MACs, no timings


def test_members_record_their_latency_and_the_cost_of_the_objective():
    timed = Member.from_dict({"sample": {"b": [0]}, "iou": 0.5, "macs": 10, "latency_ms": 3}, stage=2)
    assert timed.latency_ms == 3.0 and timed.cost("latency") == 3.0 and timed.cost("macs") == 10.0
    record = StageRecord(2, [], [timed], [0], [0], 1.0)
    assert record.to_dict()["population"][0]["latency_ms"] == 3.0
    assert StageRecord.from_dict(record.to_dict()) == record
    plain = Member.from_dict({"sample": {"b": [0]}, "iou": 0.5, "macs": 10}, stage=2)
    assert plain.latency_ms is None
    with pytest.raises(ValueError) as err:
        plain.cost("latency")
    assert str(err.value) == "stage 2: a member has no latency_ms, but the objective is latency"


def test_bixnas_and_the_nnictl_class_args_pass_the_objective_to_phase2():
    from nni_bixnas.experiment.spec import BridgeSpec
    from nni_bixnas.strategy import BiXNAS

    assert BiXNAS(phase2={"objective": "latency", "latency_repeats": 3}).phase2_kwargs["objective"] == "latency"
    with pytest.raises(ValueError, match=re.escape("unknown objective 'time'; expected one of 'macs', 'latency'")):
        BiXNAS(phase2={"objective": "time"})
    class_args = {"model_space": "nni_bixnas.space.BiONetPlusPlus", "model_space_kwargs": {"width": 4, "stem_width": 4},
                  "strategy": "nni_bixnas.strategy.BiXNAS", "strategy_kwargs": {"phase2": {"objective": "latency"}},
                  "evaluator": "nni_bixnas.training.make_evaluator", "evaluator_kwargs": {"data": DATA}}
    _, strategy, _ = BridgeSpec.from_class_args(class_args).build()
    assert strategy.phase2_kwargs == {"objective": "latency"}
    class_args["strategy_kwargs"] = {"phase2": {"objective": "latency", "latency_repeats": 0}}
    with pytest.raises(ValueError, match=r"classArgs.strategy: .*latency_repeats must be a positive int, got 0"):
        BridgeSpec.from_class_args(class_args).build()


# -- the export -----------------------------------------------------------------------------------------
def test_the_export_shows_latency_where_the_stage_was_timed(tmp_path, monkeypatch):
    history = fabricated.search_history()  # stage 5 timed (objective='latency'); stage 4 a MACs stage
    for member, ms in zip(history[0]["population"], (10.0, 10.0, 12.5)):
        member["latency_ms"] = ms
    monkeypatch.setattr(fabricated, "search_history", lambda: history)
    fabricated.fabricate_search(tmp_path)
    drawn = []
    real_png = export_module.panels_png

    def panels_png(panels, handle, title=""):
        drawn.append(([p.x for p in panels], title))
        return real_png(panels, handle, title)

    monkeypatch.setattr(export_module, "panels_png", panels_png)
    written = export_experiment(fabricated.EXP_ID, out_dir=tmp_path / "out", experiment_dir=tmp_path / "exps")
    # stages 5 and 4, the retraining, the Phase 1 trial (no MACs: not drawn)
    assert drawn == [(["latency_ms", "macs", "macs", "macs"], f"{fabricated.EXP_ID}: IoU vs MACs and latency")]
    summary = written["summary"].read_text()
    assert "2 members (distinct), trial St5bb; 2 on the front (IoU vs latency), 2 kept" in summary
    assert "| member | IoU | GMACs | latency (ms) | params | front | kept | choices of the stage's blocks |" in summary
    assert "\n| 1 | 0.6500 | 0.350 | 12.50 | " in summary and "\n| 0 | 0.6100 | 0.300 | 10.00 | " in summary
    # stage 4 was not timed: no latency column, the front of (IoU, MACs)
    assert "2 members (distinct), trial St4cc; 1 on the front, 1 kept" in summary
    assert re.search(r"\n\| 1 \| 0\.5000 \| 0\.320 \| [\d,]+ \|  \|  \| ", summary)
    stage5 = [c for c in candidates(read_experiment(fabricated.EXP_ID, tmp_path / "exps")) if c.stage == 5]
    assert [c.latency_ms for c in stage5] == [10.0, 10.0, 12.5]


def test_a_latency_panel_draws_the_points_that_report_a_latency():
    points = [Member({"b": [0]}, 0.5, 2_000_000_000, 1, 5, latency_ms=4.0),
              Member({"b": [1]}, 0.6, 3_000_000_000, 1, 5, latency_ms=None)]
    assert cost_axis(points) == "latency_ms" and cost_axis(points[1:]) == "macs"
    assert Panel("t", points, x="latency_ms").usable() == [0] and Panel("t", points).usable() == [0, 1]
    assert Panel("t", points, x="latency_ms").x_of(0) == 4.0 and Panel("t", points).x_of(1) == 3.0
