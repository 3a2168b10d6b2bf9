"""The BiX-NAS chain as a real NNI experiment: ``nnictl create`` on a tiny ``examples/bixnas.yml``, stopped
after a Phase 2 stage, ``nnictl resume``d to DONE; finished units are not trained again. What the web UI gets:
each trial's unit in its parameters, the headline metrics on the last retraining, the found net as the
dispatcher log's last line."""

from __future__ import annotations

import json
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
        profile = client.get("/experiment")
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
    _check_web_ui_view(trials, profile)
    _check_summary_line(log, json.loads(result.read_text()))


def _parameters(trial: dict) -> dict:
    return json.loads(trial["hyperParameters"][0])["parameters"]


def _check_web_ui_view(trials, profile) -> None:
    """Labels in every trial's parameters (what the web UI shows), headline metrics on the retraining."""
    from nni_bixnas.experiment.launch import decode_metric

    succeeded = sorted((t for t in trials if t["status"] == "SUCCEEDED"), key=lambda t: t["sequenceId"])
    retrain = next(t for t in succeeded if _parameters(t)["mutation_summary"]["unit"] == "retrain")
    print("retraining trial hyperParameters[0]:", json.dumps({**json.loads(retrain["hyperParameters"][0]),
          "parameters": {k: "..." if k != "mutation_summary" else v for k, v in _parameters(retrain).items()}}))
    summaries = [_parameters(t)["mutation_summary"] for t in succeeded]
    assert [s["unit"] for s in summaries] == ["phase1"] + [f"stage {k}" for k in (5, 4, 3, 2, 1)] + ["retrain"]
    assert all(isinstance(s["seed"], int) for s in summaries)
    assert [s.get("stage") for s in summaries] == [None, 5, 4, 3, 2, 1, None]
    assert all("sample" in _parameters(t) for t in trials)  # the model itself is still there
    space = profile["params"]["searchSpace"]  # the search-space view: the architecture choices only
    assert space and all(label.startswith(("enc_", "dec_")) for label in space), sorted(space)

    finals = [decode_metric(t["finalMetricData"][0]["data"]) for t in succeeded]
    assert [f["iou_kind"] for f in finals] == ["shared weights"] * 6 + ["retrained"]
    headline = finals[-1]
    assert headline["retrained_seeds"] == 1 and headline["retrained_iou_std"] == 0.0
    assert headline["retrained_iou_mean"] == headline["default"]
    assert headline["macs"] > 0 and headline["params"] > 0


def _check_summary_line(log: str, result: dict) -> None:
    """The dispatcher log's last line before the stop names the found net, its MACs, params and IoU."""
    lines = log.splitlines()
    found = [i for i, line in enumerate(lines) if "BiX-NAS found: " in line]
    assert len(found) == 1, found
    line, after = lines[found[0]], lines[found[0] + 1:]
    assert not after or "Terminate command received" in after[0], after[:3]
    assert " ".join(result["genes"][0].split()) in line
    assert f"{result['params']:,} params" in line and f"{result['macs'] / 1e9:.3f} GMACs" in line
    assert f"retrained IoU {result['retrained_iou_mean']:.4f} ± 0.0000 over 1 seed" in line
