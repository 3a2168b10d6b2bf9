"""The BiX-NAS chain as a real NNI experiment: ``nnictl create`` on a tiny ``examples/bixnas.yml``, stopped
after a Phase 2 stage, ``nnictl resume``d to DONE; finished units are not trained again."""

from __future__ import annotations

import time

import pytest

from test_experiment_nnictl import write_config


def tiny(config: dict) -> None:
    args = config["tuner"]["classArgs"]
    args["model_space_kwargs"] = {"width": 4, "stem_width": 4}
    args["strategy_kwargs"].update(phase1={"epochs": 1}, phase2={"samples": 2, "epochs": 1, "keep": [2, 1]},
                                   retrain={"seeds": [0], "max_epochs": 1})
    args["evaluator_kwargs"].update(data="default:n=6,size=64", max_epochs=1)


def _stage(trial: dict):
    final = trial.get("finalMetricData") or []
    from nni_bixnas.experiment.launch import decode_metric

    value = decode_metric(final[0]["data"]) if final else None
    return value.get("stage", value.get("phase")) if isinstance(value, dict) else None


@pytest.mark.slow
def test_bixnas_yml_stops_after_a_phase2_stage_and_resumes_to_done(tmp_path, nni_home):
    from nni_bixnas.experiment.launch import ManagerClient, experiment_id_from_output, free_port, nnictl, stop

    home, env = nni_home
    config = write_config(tmp_path, "bixnas.yml", tiny)
    port = free_port()
    exp_id = experiment_id_from_output(nnictl(["create", "--config", str(config), "--port", str(port)], env))
    client = ManagerClient(port)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = [_stage(t) for t in client.trial_jobs() if t["status"] == "SUCCEEDED"]
            if 5 in done:  # Phase 1 and the first Phase 2 stage (stage 5) finished
                break
            assert client.status()["status"] not in ("ERROR", "DONE"), client.status()
            time.sleep(0.5)
        else:
            pytest.fail("the first Phase 2 stage did not finish within 300 s")
    finally:
        stop([exp_id], env)

    port = free_port()
    try:
        nnictl(["resume", exp_id, "--port", str(port)], env)
        client = ManagerClient(port)
        assert client.wait_status(timeout=400) == "DONE", client.status()
        trials = client.trial_jobs()
        metrics = client.metric_data()
    finally:
        stop([exp_id], env)

    succeeded = [_stage(t) for t in trials if t["status"] == "SUCCEEDED"]
    # Phase 1 (phase=1) and stage 5 ran once, before the stop; every later unit once, after the resume.
    assert sorted(s for s in succeeded if s is not None) == [1, 1, 2, 3, 4, 5], succeeded
    assert succeeded.count(None) == 1  # the retraining (its final dict has neither stage nor phase)
    assert {m["type"] for m in metrics} == {"PERIODICAL", "FINAL"}
    log = (tmp_path / "experiments" / exp_id / "log" / "dispatcher.log").read_text()
    assert "Resumed BiXNAS from" in log
    result = tmp_path / "experiments" / exp_id / "strategy" / "result.json"
    assert result.is_file()
