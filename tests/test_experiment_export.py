"""``bixnas export`` on a fabricated experiment folder (db/nni.sqlite + strategy state + result.json)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import torch
from PIL import Image

from nni_bixnas.cli import main
from nni_bixnas.experiment.export import candidates, export_experiment, pareto_front, read_experiment
from nni_bixnas.experiment.state import STATE_FILE, dump_state
from nni_bixnas.space.gene import Gene, published_gene

EXP_ID = "fab12345"


def _sample(seed: int) -> dict:
    sample = published_gene("bixnet").to_sample()
    label = sorted(sample)[seed % len(sample)]
    sample[label] = [0, 1] if sample[label] != [0, 1] else [0]
    return sample


def _encode(metric) -> str:
    return json.dumps(json.dumps(metric))  # NNI stores metrics as JSON text of JSON text


def fabricate(root: Path, *, strategy_out: Path = None, with_metrics: bool = True, class_args: dict = None) -> Path:
    expdir = root / EXP_ID
    (expdir / "db").mkdir(parents=True)
    db = sqlite3.connect(expdir / "db" / "nni.sqlite")
    db.execute("CREATE TABLE TrialJobEvent (timestamp integer, trialJobId text, event text, data text, logPath text,"
               " sequenceId integer, message text, environmentId text)")
    db.execute("CREATE TABLE MetricData (timestamp integer, trialJobId text, parameterId text, type text,"
               " sequence integer, data text)")
    db.execute("CREATE TABLE ExperimentProfile (params text, id text, execDuration integer, startTime integer,"
               " endTime integer, logDir text, nextSequenceId integer, revision integer)")
    params = {"tuner": {"classArgs": {"strategy_kwargs": {"out_dir": str(strategy_out) if strategy_out else None},
                                      **(class_args or {})}}}
    db.execute("INSERT INTO ExperimentProfile VALUES (?, ?, 1, 0, 1, ?, 5, 3)", (json.dumps(params), EXP_ID, str(root)))
    stage_pop = {
        3: [{"sample": _sample(0), "iou": 0.60, "macs": 2.0e9}, {"sample": _sample(1), "iou": 0.70, "macs": 3.0e9}],
        2: [{"sample": _sample(2), "iou": 0.72, "macs": 2.5e9}, {"sample": _sample(3), "iou": 0.50, "macs": 4.0e9}],
    }
    trials = [
        ("Aaaa1", "SUCCEEDED", {"default": 0.65, "phase": 1, "candidates": {}}),
        ("Bbbb2", "SUCCEEDED", {"default": 0.70, "stage": 3, "population": stage_pop[3], "front": [0, 1]}),
        ("Cccc3", "SUCCEEDED", {"default": 0.72, "stage": 2, "population": stage_pop[2], "front": [0]}),
        ("Dddd4", "FAILED", None),
        ("Eeee5", "SUCCEEDED", {"default": 0.74, "dice": 0.85, "params": 1.3e6, "macs": 2.4e9}),
    ]
    for t, (trial_id, status, final) in enumerate(trials):
        data = json.dumps({"parameter_id": t, "parameters": {"status": "frozen", "sample": _sample(t)}})
        db.execute("INSERT INTO TrialJobEvent VALUES (?, ?, 'WAITING', ?, '', ?, '', 'local-env')",
                   (10 * t, trial_id, data, t))
        db.execute("INSERT INTO TrialJobEvent VALUES (?, ?, ?, '', '', ?, '', 'local-env')",
                   (10 * t + 5, trial_id, status, t))
        if final is not None and with_metrics:
            db.execute("INSERT INTO MetricData VALUES (?, ?, ?, 'PERIODICAL', 0, ?)",
                       (10 * t + 1, trial_id, str(t), _encode({"default": 0.1})))
            db.execute("INSERT INTO MetricData VALUES (?, ?, ?, 'FINAL', 0, ?)",
                       (10 * t + 2, trial_id, str(t), _encode(final)))
    db.commit()
    db.close()
    (expdir / "checkpoint").mkdir()
    (expdir / "checkpoint" / STATE_FILE).write_text(dump_state({"finished": [[0, 0.65]]}))
    return expdir


def test_reader_collects_trials_populations_and_the_front(tmp_path):
    fabricate(tmp_path)
    results = read_experiment(EXP_ID, tmp_path)
    assert [t.status for t in results.trials] == ["SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED", "SUCCEEDED"]
    assert results.trials[3].final is None and results.trials[1].intermediate == [{"default": 0.1}]
    assert results.strategy_state == {"finished": [[0, 0.65]]}
    points = candidates(results)
    # 2 + 2 population members, and the plain trial; Phase 1's dict has no MACs (kept, but not on the front)
    assert sorted(p.iou for p in points) == [0.5, 0.6, 0.65, 0.7, 0.72, 0.74]
    front = pareto_front(points)
    assert [(p.iou, p.macs) for p in front] == [(0.6, 2.0e9), (0.74, 2.4e9)]
    assert {p.stage for p in points} == {None, 2, 3}


def test_export_writes_gene_sample_plot_and_summary(tmp_path, capsys):
    fabricate(tmp_path / "exps")
    out = tmp_path / "out"
    assert main(["export", EXP_ID, "--out", str(out), "--experiment-dir", str(tmp_path / "exps")]) == 0
    printed = capsys.readouterr().out
    for name in ("gene.txt", "gene.json", "pareto.png", "summary.md"):
        assert (out / name).is_file() and name in printed
    # no strategy result: the best-IoU candidate (the plain trial Eeee5, sample _sample(4)) is the final gene
    chosen = json.loads((out / "gene.json").read_text())
    assert chosen["sample"] == _sample(4) and "trial Eeee5" in chosen["source"]
    assert Gene.parse((out / "gene.txt").read_text()).to_sample() == _sample(4)
    image = Image.open(out / "pareto.png")
    assert image.size == (800, 560) and (out / "pareto.png").stat().st_size < 300_000
    summary = (out / "summary.md").read_text()
    assert "| Dddd4 | FAILED |" in summary and "| Cccc3 | SUCCEEDED | 2 | 0.7200 |" in summary
    assert "## Pareto front (IoU vs MACs, 6 candidates)" in summary


def test_export_prefers_the_strategy_result_and_copies_the_retrained_checkpoint(tmp_path):
    strategy_out = tmp_path / "bixnas_out"
    (strategy_out / "retrain").mkdir(parents=True)
    good, worse = strategy_out / "retrain" / "best0.ckpt", strategy_out / "retrain" / "best1.ckpt"
    for path, tag in ((good, "good"), (worse, "worse")):  # the fields export checks (it loads weights-only)
        torch.save({"state_dict": {}, "hyper_parameters": {"model_name": "unet"}, "tag": tag}, path)
    gene = published_gene("bixnet")
    (strategy_out / "result.json").write_text(json.dumps({
        "final_samples": [gene.to_sample()], "genes": [gene.to_text()],
        "retrained": [{"seed": 0, "default": 0.6, "checkpoint": str(worse)},
                      {"seed": 1, "default": 0.8, "checkpoint": str(good)}],
    }))
    fabricate(tmp_path / "exps", strategy_out=strategy_out)
    written = export_experiment(EXP_ID, out_dir=tmp_path / "out", experiment_dir=tmp_path / "exps" / EXP_ID)
    assert written["checkpoint"].read_bytes() == good.read_bytes()
    assert Gene.parse(written["gene"].read_text()).to_sample() == gene.to_sample()
    assert json.loads(written["sample"].read_text())["source"] == "strategy result.json"


def test_export_of_an_experiment_without_metrics_still_writes_a_summary(tmp_path):
    fabricate(tmp_path, with_metrics=False)
    written = export_experiment(EXP_ID, experiment_dir=tmp_path)
    assert written["summary"].parent == tmp_path / EXP_ID / "export"
    summary = written["summary"].read_text()
    assert "Trials: 5 (FAILED 1, SUCCEEDED 4)" in summary and "No architecture found." in summary
    assert "gene" not in written and written["plot"].is_file()  # no metric, no choice; an empty plot


def test_unknown_experiment_is_a_clear_error(tmp_path, capsys):
    assert main(["export", "nope", "--experiment-dir", str(tmp_path)]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err


def test_summary_compares_the_final_gene_with_the_supernet(tmp_path):
    from nni_bixnas import create_model
    from nni_bixnas.profile import count_complexity

    kwargs = {"width": 8, "stem_width": 8}
    fabricate(tmp_path, class_args={"model_space": "nni_bixnas.space.BiONetPlusPlus", "model_space_kwargs": kwargs})
    written = export_experiment(EXP_ID, out_dir=tmp_path / "out", experiment_dir=tmp_path)
    summary = written["summary"].read_text()
    searched = count_complexity(create_model("bixnet", gene=Gene.from_sample(_sample(4)), **kwargs))
    dense = count_complexity(create_model("bionet_pp", **kwargs))
    assert f"| final gene | {searched.params:,} | {searched.macs / 1e9:.3f} |" in summary
    assert f"| BiO-Net++ SuperNet (dense) | {dense.params:,} | {dense.macs / 1e9:.3f} |" in summary
    assert searched.macs < dense.macs
