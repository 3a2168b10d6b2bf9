"""The bridge's classArgs checks and websocket fixes, in-process (no NNI manager)."""

from __future__ import annotations

import pytest

from nni_bixnas.experiment import _patches
from nni_bixnas.experiment.spec import BridgeSpec, check_gpus, check_kwargs, import_object, trials_run_here

GOOD = {
    "model_space": "nni_bixnas.space.BiONetPlusPlus",
    "model_space_kwargs": {"width": 4, "stem_width": 4},
    "strategy": "nni.nas.strategy.RegularizedEvolution",
    "strategy_kwargs": {"population_size": 2, "sample_size": 1},
    "evaluator": "nni_bixnas.training.make_evaluator",
    "evaluator_kwargs": {"data": "default:n=8,size=32", "max_epochs": 1},
}


def test_good_class_args_build_space_strategy_and_evaluator():
    space, strategy, evaluator = BridgeSpec.from_class_args(GOOD).build()
    assert type(space).__name__ == "BiONetPlusPlus" and type(strategy).__name__ == "RegularizedEvolution"
    from nni_bixnas.experiment import legacy_search_space

    legacy = legacy_search_space(space)
    assert legacy["enc_1_0"]["_type"] == "choice" and [0, 1] in legacy["enc_1_0"]["_value"]


@pytest.mark.parametrize("path, message", [
    ("BiONetPlusPlus", "must be an import path like 'package.module.Name'"),
    ("nni_bixnas.nope.Space", "cannot import module 'nni_bixnas.nope'"),
    ("nni_bixnas.space.Nope", "module 'nni_bixnas.space' has no attribute 'Nope'"),
])
def test_import_errors_name_the_field_and_value(path, message):
    with pytest.raises(ValueError, match="classArgs.model_space.*") as err:
        import_object(path, "model_space")
    assert message in str(err.value)


def test_kwargs_are_checked_against_the_real_model_space_signature():
    from nni_bixnas.space import BiONetPlusPlus

    message = r"unexpected keyword argument 'widht'; accepted keywords: in_channels, num_classes, width"
    with pytest.raises(ValueError, match=message):
        check_kwargs(BiONetPlusPlus, {"widht": 4}, "model_space_kwargs")
    with pytest.raises(ValueError, match="classArgs.strategy_kwargs must be a mapping"):
        check_kwargs(BiONetPlusPlus, [1, 2], "strategy_kwargs")


def test_unknown_keys_missing_fields_and_constructor_errors():
    with pytest.raises(ValueError, match=r"unknown classArgs key\(s\) \['stratgy'\]"):
        BridgeSpec.from_class_args({**GOOD, "stratgy": "x.Y"})
    with pytest.raises(ValueError, match="classArgs.evaluator is required"):
        BridgeSpec.from_class_args({k: v for k, v in GOOD.items() if not k.startswith("evaluator")})
    bad = {**GOOD, "evaluator_kwargs": {"epochs": 3}}  # make_evaluator(**kw) binds, then rejects
    with pytest.raises(ValueError, match=r"classArgs.evaluator: .*unknown train_and_report argument"):
        BridgeSpec.from_class_args(bad).build()


def test_missing_data_path_is_reported_unless_trials_run_elsewhere(tmp_path):
    bad = {**GOOD, "evaluator_kwargs": {"data": f"monuseg:{tmp_path / 'absent'}"}}
    with pytest.raises(FileNotFoundError, match=r"classArgs.evaluator_kwargs.data = .*absent.* does not exist"):
        BridgeSpec.from_class_args(bad)
    BridgeSpec.from_class_args(bad, check_paths=False)
    with pytest.raises(ValueError, match="classArgs.evaluator_kwargs.data: unknown data scheme 'monuseeg'"):
        BridgeSpec.from_class_args({**GOOD, "evaluator_kwargs": {"data": "monuseeg:/x"}})


def test_gpu_check_and_platforms():
    local = {"trainingService": {"platform": "local", "trialGpuNumber": 2}}
    with pytest.raises(ValueError, match="trialGpuNumber is 2 but this machine has 1 CUDA GPU"):
        check_gpus(local, device_count=1)
    check_gpus(local, device_count=2)
    check_gpus({"trainingService": {"platform": "remote", "trialGpuNumber": 4}}, device_count=0)
    check_gpus({"trialGpuNumber": 0, "trainingService": {"platform": "local"}}, device_count=0)
    assert trials_run_here(local)
    assert not trials_run_here({"trainingService": [{"platform": "local"}, {"platform": "remote"}]})


def test_websocket_receive_keeps_slashes_and_hashes(monkeypatch):
    """Bug (a): json-tricks' comment stripping corrupted nested messages containing // or #."""
    import json

    import nni
    from nni.runtime.command_channel.websocket import connection

    _patches.apply()
    # the TrialEnd ("EN") message of a trial whose parameters contain a URL and a '#'
    params = json.dumps({"parameter_id": 0, "parameters": {"url": "http://x", "p": "run #3"}})
    content = json.dumps({"trial_job_id": "Ab12C", "event": "SUCCEEDED", "hyper_params": params})
    message = json.dumps({"type": "EN", "content": content})

    class FakeWs:
        def recv(self):
            return message

    conn = connection.WsConnection("ws://localhost:1/tuner")
    conn._ws = FakeWs()
    monkeypatch.setattr(connection, "_wait", lambda value: value)
    received = conn.receive()
    hyper_params = json.loads(json.loads(received["content"])["hyper_params"])
    assert hyper_params["parameters"] == {"url": "http://x", "p": "run #3"}
    with pytest.raises(ValueError):  # what NNI's own receive does with it
        nni.load(message)
