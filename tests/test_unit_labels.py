"""What a user sees of each unit in NNI's web UI: the unit's labels in its trial parameters, which the trial
command ignores, the headline metrics of the last retraining and the summary line of the dispatcher log.

The parameters are built as the engine sends them (``UnitRunner.make_job`` and
``TunerCommandChannel.send_trial``) and read back as the trial does (``nni.load`` of the stored record,
then ``training_service.trial_entry``), without ``nnictl``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import nni
import pytest
import torch
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.execution.training_service import trial_entry
from nni.nas.space import SimplifiedModelSpace
from nni.runtime.trial_command_channel import get_default_trial_command_channel, set_default_trial_command_channel
from nni.runtime.trial_command_channel.base import TrialCommandChannel
from nni.runtime.tuner_command_channel import TunerCommandChannel

from nni_bixnas.experiment import replay
from nni_bixnas.experiment.bridge import _log_summary
from nni_bixnas.space import BiONetPlusPlus, Gene
from nni_bixnas.strategy import records, units
from nni_bixnas.strategy.bixnas import BiXNAS
from nni_bixnas.strategy.runner import SUMMARY_KEY, LabelledModelSpace, UnitRunner, unit_summary
from nni_bixnas.strategy.supernet.spaces import space_reference
from nni_bixnas.training import make_evaluator

sys.path.insert(0, str(Path(__file__).parent))
from test_training_fixtures import TinyNet  # noqa: E402

DATA = "default:n=6,size=64"


def probe_unit(model, *, seed: int, stage: int, record: str) -> dict:
    """A stand-in job body: reports what the trial built."""
    result = {"default": 0.5, "seed": seed, "stage": stage}
    chosen = model.current_choices()
    Path(record).write_text(json.dumps({"type": type(model).__name__, "chosen": chosen}))
    nni.report_final_result(result)
    return result


probe_unit.trial_label = "probe {stage}"


@pytest.fixture
def space():
    return SimplifiedModelSpace.from_model(BiONetPlusPlus(width=4, stem_width=4), make_evaluator(data=DATA))


@pytest.fixture
def runner(space):
    with UnitRunner(space, SequentialExecutionEngine()) as unit_runner:
        yield unit_runner


def sent_record(job) -> str:
    """The NewTrialJob payload the engine's channel sends for ``job`` (the record the trial receives)."""
    channel = TunerCommandChannel("ws://localhost:1/tuner")  # never connected
    sent = []
    channel._send = lambda command_type, payload: sent.append(payload)
    channel.send_trial(parameter_id=7, parameters=job)
    return sent[0]


def a_sample(space) -> dict:
    return {label: list(mutable.default()) for label, mutable in space.simplify().items()}


def test_unit_summary_labels_each_kind_of_unit():
    assert unit_summary(units.selection_matrix_unit, {"seed": 11, "epochs": 3}) == {"unit": "phase1", "seed": 11}
    assert unit_summary(units.phase2_stage_unit, {"stage": 4, "seed": 2, "members": []}) == {
        "unit": "stage 4", "stage": 4, "seed": 2}
    assert unit_summary(units.retrain_unit, {"seed": 0, "max_epochs": 5}) == {"unit": "retrain", "seed": 0}
    # the seed of a unit's training settings
    assert unit_summary(units.retrain_unit, {"training": {"seed": 4}, "max_epochs": 5}) == {"unit": "retrain",
                                                                                           "seed": 4}
    # any function: its name; only integers become number fields
    assert unit_summary(lambda model: None, {"seed": True, "stage": "5"}) == {"unit": "<lambda>"}


def test_trial_parameters_carry_the_labels_at_the_top(runner, space):
    job = runner.make_job(units.phase2_stage_unit, a_sample(space), space=space_reference(space), stage=4,
                          members=[a_sample(space)], training={"seed": 3, "data": DATA})
    assert isinstance(job, LabelledModelSpace) and job.summary == {"unit": "stage 4", "stage": 4, "seed": 3}
    parameters = json.loads(sent_record(job))["parameters"]  # what the manager stores and /trial-jobs shows
    assert next(iter(parameters)) == SUMMARY_KEY
    assert parameters[SUMMARY_KEY] == {"unit": "stage 4", "stage": 4, "seed": 3}
    assert parameters["sample"] == a_sample(space)  # still where the export reads it


def test_the_trial_side_rebuilds_and_runs_the_model_from_labelled_parameters(runner, space, tmp_path):
    sample = a_sample(space)
    sample["enc_1_0"] = [0]
    job = runner.make_job(probe_unit, sample, seed=5, stage=2, record=str(tmp_path / "record.json"))
    received = nni.load(sent_record(job))
    model = received["parameters"]
    assert isinstance(model, LabelledModelSpace) and model.summary == {"unit": "probe 2", "stage": 2, "seed": 5}
    assert model.sample == sample

    class Channel(TrialCommandChannel):
        def __init__(self):
            self.metrics = []

        def receive_parameter(self):
            return nni.load(sent_record(job))

        def send_metric(self, type, parameter_id, trial_job_id, sequence, value):  # noqa: A002
            self.metrics.append((type, parameter_id, value))

    previous, channel = get_default_trial_command_channel(), Channel()
    set_default_trial_command_channel(channel)
    try:
        trial_entry()  # python -m nni.nas.execution.training_service trial
    finally:
        set_default_trial_command_channel(previous)
        nni.trial._params = None
    built = json.loads((tmp_path / "record.json").read_text())
    assert built["type"] == "BiONetPlusPlus"
    live = BiONetPlusPlus(width=4, stem_width=4).effective_sample(sample)
    assert "enc_1_0" in live and {label: built["chosen"][label] for label in live} == live  # frozen at the sample
    assert channel.metrics and channel.metrics[-1][0] == "FINAL" and channel.metrics[-1][1] == 7
    assert channel.metrics[-1][2]["seed"] == 5


def test_a_resumed_unit_matches_its_stored_labelled_parameters(runner, space):
    job = runner.make_job(units.retrain_unit, a_sample(space), training={"seed": 1, "data": DATA})
    stored = json.loads(sent_record(job))["parameters"]
    again = runner.make_job(units.retrain_unit, a_sample(space), training={"seed": 1, "data": DATA})
    assert replay.model_key(stored) == replay.model_key(again)
    other = runner.make_job(units.retrain_unit, a_sample(space), training={"seed": 2, "data": DATA})
    assert replay.model_key(stored) != replay.model_key(other)


def test_raw_format_spaces_are_not_relabelled():
    from nni.nas.space import RawFormatModelSpace

    raw = RawFormatModelSpace.from_model(BiONetPlusPlus(width=4, stem_width=4), make_evaluator(data=DATA))
    with UnitRunner(raw, SequentialExecutionEngine()) as unit_runner:
        job = unit_runner.make_job(units.retrain_unit, a_sample(raw), training={"seed": 0})
    assert type(job) is RawFormatModelSpace


def test_retrained_headline_is_mean_and_sample_std():
    assert records.retrained_headline([]) == {}
    assert records.retrained_headline([0.5, None]) == {"retrained_iou_mean": 0.5, "retrained_iou_std": 0.0,
                                                     "retrained_seeds": 1}
    headline = records.retrained_headline([0.6, 0.8])
    assert headline["retrained_iou_mean"] == pytest.approx(0.7)
    assert headline["retrained_iou_std"] == pytest.approx(0.1414213, abs=1e-6)
    assert "retrained_final_iou_mean" not in headline


@pytest.mark.parametrize(
    "finals, expected",
    [
        ([0.5, 0.7], {"retrained_final_iou_mean": 0.6, "retrained_final_iou_std": 0.1414214}),
        ([0.5, None], {}),  # one seed's last epoch unknown (an older run): no final-epoch headline
        ([], {}),
    ],
)
def test_retrained_headline_of_the_final_epochs(finals, expected):
    headline = records.retrained_headline([0.6, 0.8], finals)
    assert {k: round(v, 7) for k, v in headline.items() if "final" in k} == expected
    assert headline["retrained_iou_mean"] == pytest.approx(0.7)


def test_the_last_retraining_reports_the_headline(tmp_path, monkeypatch):
    reported = []
    monkeypatch.setattr(nni, "report_final_result", reported.append)
    monkeypatch.setattr(nni, "report_intermediate_result", lambda value: None)
    torch.manual_seed(0)
    training = {"seed": 0, "data": "default", "patch_size": 32}
    final = units.retrain_unit(TinyNet(width=4), training=training, earlier_ious=[0.25], max_epochs=1,
                               out_dir=str(tmp_path / "last"), progress=False)
    assert reported == [final]
    assert final["iou_kind"] == "retrained" and final["retrained_seeds"] == 2
    assert final["retrained_iou_mean"] == pytest.approx((0.25 + final["default"]) / 2)
    assert final["macs"] > 0 and final["params"] > 0
    history = json.loads((tmp_path / "last" / "history.json").read_text())["history"]
    assert (final["final_epoch"], final["final_iou"]) == (1, history[-1]["val_iou"])
    # an earlier seed only says what its IoU is
    first = units.retrain_unit(TinyNet(width=4), training=training, max_epochs=1, out_dir=str(tmp_path / "first"))
    assert first["iou_kind"] == "retrained" and "retrained_iou_mean" not in first


def test_the_result_unit_reports_the_retrained_mean_as_its_labelled_default(monkeypatch):
    from nni_bixnas.experiment.stages import unit_label

    reported = []
    monkeypatch.setattr(nni, "report_final_result", reported.append)
    final = units.retrained_result_unit(TinyNet(width=4), seeds=[0, 1], ious=[0.6, 0.8], macs=2e9, params=10)
    assert reported == [final]
    assert final["default"] == final["retrained_iou_mean"] == pytest.approx(0.7)
    assert final["default_is"] == "retrained_iou_mean" and final["iou_kind"] == "retrained, mean over seeds"
    assert final["retrained_ious"] == {"0": 0.6, "1": 0.8} and final["retrained_seeds"] == 2
    assert (final["macs"], final["params"]) == (2e9, 10)
    assert unit_summary(units.retrained_result_unit, {"seeds": [0, 1]}) == {"unit": "result"}
    assert unit_label({"function": "retrained_result_unit"}, final) == "result"


def finished_bixnas(retrained) -> BiXNAS:
    strategy = BiXNAS(phase1={"epochs": 1}, phase2={"samples": 2, "epochs": 1}, retrain={"seeds": [0, 1]},
                      training={"data": DATA})
    gene = Gene.dense()
    strategy.result = {"final_samples": [gene.to_sample()], "genes": [gene.to_text()],
                       **records.retrained_headline([r["default"] for r in retrained],
                                                    [r.get("final_iou") for r in retrained]),
                       "macs": retrained[0]["macs"], "params": retrained[0]["params"]}
    return strategy


def test_summary_line_names_the_net_its_cost_and_retrained_iou():
    strategy = finished_bixnas([{"default": 0.6, "macs": 2.5e9, "params": 23840},
                                {"default": 0.8, "macs": 2.5e9, "params": 23840}])
    line = strategy.summary_line()
    assert "\n" not in line and line.startswith("BiX-NAS found: enc_0_0_0 enc_0_1_0")
    assert "dec_2_3_0_1_2_3_4 |" in line
    assert "2.500 GMACs (512 x 512), 23,840 params, retrained IoU 0.7000 ± 0.1414 over 2 seeds" in line
    assert BiXNAS(training={"data": DATA}).summary_line() is None
    finals = finished_bixnas([{"default": 0.6, "final_iou": 0.5, "macs": 2.5e9, "params": 23840},
                              {"default": 0.8, "final_iou": 0.8, "macs": 2.5e9, "params": 23840}]).summary_line()
    assert finals.endswith("retrained IoU 0.7000 ± 0.1414 over 2 seeds (best validation epoch; final epoch "
                           "0.6500 ± 0.2121)")


def test_the_bridge_ends_the_log_with_the_summary_line(caplog):
    strategy = finished_bixnas([{"default": 0.6, "macs": 1e9, "params": 10}])
    with caplog.at_level(logging.INFO, logger="nni_bixnas.experiment.bridge"):
        _log_summary(strategy)
        _log_summary(object())  # a strategy without a summary: nothing

    assert [r.getMessage() for r in caplog.records] == [strategy.summary_line()]
