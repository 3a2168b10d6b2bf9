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


def fabricate(root: Path, *, strategy_out: Path = None, with_metrics: bool = True, class_args: dict = None,
              trials: list = None) -> Path:
    """An experiment folder; ``trials`` are ``(id, status, final[, unit kwargs])`` (default: a mixed set)."""
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
    trials = trials or [
        ("Aaaa1", "SUCCEEDED", {"default": 0.65, "phase": 1, "candidates": {}}),
        ("Bbbb2", "SUCCEEDED", {"default": 0.70, "stage": 3, "population": stage_pop[3], "front": [0, 1]}),
        ("Cccc3", "SUCCEEDED", {"default": 0.72, "stage": 2, "population": stage_pop[2], "front": [0]}),
        ("Dddd4", "FAILED", None),
        ("Eeee5", "SUCCEEDED", {"default": 0.74, "dice": 0.85, "params": 1.3e6, "macs": 2.4e9}),
    ]
    for t, (trial_id, status, final, *unit) in enumerate(trials):
        parameters = {"status": "frozen", "sample": _sample(t)}
        if unit:  # as NNI stores a unit job: the evaluator's function and arguments
            kwargs = {k: v for k, v in unit[0].items() if k != "function"}
            function = {"__nni_type__": f"path:nni_bixnas.strategy.units.{unit[0]['function']}"}
            parameters["evaluator"] = {"__symbol__": "path:nni.nas.evaluator.functional.FunctionalEvaluator",
                                       "__kwargs__": {"function": function, **kwargs}}
        data = json.dumps({"parameter_id": t, "parameters": parameters})
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
    image = Image.open(out / "pareto.png")  # stage 3, stage 2 and the other trials: three panels
    assert image.size == (3 * 470, 450) and (out / "pareto.png").stat().st_size < 300_000
    summary = (out / "summary.md").read_text()
    assert "| Dddd4 | trial | FAILED |" in summary and "| Cccc3 | stage 2 | SUCCEEDED | 0.7200 |" in summary
    assert "| Aaaa1 | Phase 1 | SUCCEEDED | 0.6500 |" in summary
    assert "### Stage 3 (iteration 1 decoders): 2 members (distinct), trial Bbbb2; 2 on the front" in summary
    assert "## Pareto front of the other trials (IoU vs MACs, 2 candidates)" in summary
    assert "| trial | Eeee5 | 0.7400 | 2.400 |" in summary


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
    assert "program" not in written  # its weights fit no network: no torch.export program, a warning
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
    reduction = f"{100 * (searched.params / dense.params - 1):+.1f}% | {100 * (searched.macs / dense.macs - 1):+.1f}% |"
    assert f"| change vs the SuperNet | {reduction}" in summary


# -- a BiXNAS search at width 4: labelled rows, stage members, the gene header, profile, the wiring -----------
WIDTH4 = {"width": 4, "stem_width": 4}


def _variant(**choices) -> dict:
    sample = published_gene("bixnet").to_sample()
    sample.update(choices)
    return sample


# stage 5: B differs from A only in enc_2_0, a block the head never reaches (the same net: one member)
MEMBERS = {"A": _variant(), "B": _variant(enc_2_0=[0]), "C": _variant(dec_2_0=[0, 3]),
           "D": _variant(enc_2_1=[0, 4])}


def search_history() -> list:
    m = MEMBERS
    return [
        {"stage": 5, "population": [{"sample": m["A"], "iou": 0.61, "macs": 3.0e8, "best_epoch": 1, "stage": 5},
                                    {"sample": m["B"], "iou": 0.60, "macs": 3.0e8, "best_epoch": 1, "stage": 5},
                                    {"sample": m["C"], "iou": 0.65, "macs": 3.5e8, "best_epoch": 1, "stage": 5}],
         "front": [0, 2], "kept": [2, 0], "seconds": 1.0},
        {"stage": 4, "population": [{"sample": m["A"], "iou": 0.55, "macs": 3.0e8, "best_epoch": 1, "stage": 4},
                                    {"sample": m["D"], "iou": 0.50, "macs": 3.2e8, "best_epoch": 1, "stage": 4}],
         "front": [0], "kept": [0], "seconds": 1.0},
    ]


def fabricate_search(root: Path, retrained: list = None) -> Path:
    """A finished BiXNAS search of BiO-Net++ at width 4: Phase 1, stages 5 and 4, retraining seeds 0 and 1."""
    strategy_out = root / "bixnas_out"
    strategy_out.mkdir(parents=True, exist_ok=True)
    gene = published_gene("bixnet")
    history = search_history()
    retrained = retrained or [{"seed": 0, "default": 0.70, "dice": 0.80, "params": 1, "macs": 3.0e8},
                              {"seed": 1, "default": 0.72, "dice": 0.82, "params": 1, "macs": 3.0e8}]
    (strategy_out / "result.json").write_text(json.dumps({
        "final_samples": [gene.to_sample()], "genes": [gene.to_text()], "phase2_history": history,
        "retrained": retrained, "retrained_iou_mean": 0.71,
    }))
    stage_final = {h["stage"]: {"default": max(p["iou"] for p in h["population"]), "stage": h["stage"], "phase": 2,
                                "population": h["population"], "front": h["front"]} for h in history}
    trials = [
        ("Ph1aa", "SUCCEEDED", {"default": 0.50, "phase": 1, "candidates": {}},
         {"function": "selection_matrix_unit", "seed": 7}),
        ("St5bb", "SUCCEEDED", stage_final[5], {"function": "phase2_stage_unit", "stage": 5}),
        ("St4cc", "SUCCEEDED", stage_final[4], {"function": "phase2_stage_unit", "stage": 4}),
        ("Rt0dd", "SUCCEEDED", {k: v for k, v in retrained[0].items() if k not in ("seed", "checkpoint")},
         {"function": "retrain_unit", "seed": 0}),
        ("Rt1ee", "SUCCEEDED", {k: v for k, v in retrained[1].items() if k not in ("seed", "checkpoint")},
         {"function": "retrain_unit", "seed": 1}),
    ]
    class_args = {"model_space": "nni_bixnas.space.BiONetPlusPlus", "model_space_kwargs": WIDTH4}
    return fabricate(root / "exps", strategy_out=strategy_out, class_args=class_args, trials=trials)


def test_export_of_a_search_labels_every_row_and_lists_each_stage(tmp_path):
    from nni_bixnas.profile import count_params

    fabricate_search(tmp_path)
    written = export_experiment(EXP_ID, out_dir=tmp_path / "out", experiment_dir=tmp_path / "exps")
    summary = written["summary"].read_text()
    for row in ("| Ph1aa | Phase 1 |", "| St5bb | stage 5 |", "| St4cc | stage 4 |", "| Rt0dd | retrain seed 0 |",
                "| Rt1ee | retrain seed 1 |"):
        assert row in summary
    # stage 5: A and B compute the same net (one member), C; front and kept re-indexed onto the members
    assert "### Stage 5 (iteration 2 decoders): 2 members (distinct), trial St5bb; 2 on the front, 2 kept" in summary
    params = {k: count_params(create_model_of(v)) for k, v in MEMBERS.items()}
    assert params["A"] != params["C"]
    assert f"| 1 | 0.6500 | 0.350 | {params['C']:,} | yes | #1 | dec_2_0=0,3 " in summary
    assert f"| 0 | 0.6100 | 0.300 | {params['A']:,} | yes | #2 | dec_2_0=3 " in summary
    assert f"| 1 | 0.5000 | 0.320 | {params['D']:,} |  |  | enc_2_0=2,3,4 enc_2_1=0,4 enc_2_2=0; skipped: enc_2_3 |" \
        in summary
    # the retrained mean ± sample std, in the headline and the retraining table
    assert "**0.7100 ± 0.0141** (mean ± sample std over 2 seeds: 0, 1)" in summary
    assert "| retrain seed 1 | Rt1ee | 0.7200 | 0.8200 |" in summary
    assert "vs the SuperNet's" in summary


def create_model_of(sample: dict):
    from nni_bixnas import create_model

    return create_model("bixnet", gene=Gene.from_sample(sample), **WIDTH4)


def test_gene_records_the_searched_model_arguments_and_profile_reads_them(tmp_path, capsys):
    fabricate_search(tmp_path)
    written = export_experiment(EXP_ID, out_dir=tmp_path / "out", experiment_dir=tmp_path / "exps")
    text = written["gene"].read_text()
    header = "# model: bixnet width=4 stem_width=4 iterations=3 levels=4 in_channels=3 num_classes=1"
    assert text.splitlines()[0] == header
    assert Gene.load(written["gene"]) == published_gene("bixnet")  # the header is a comment to the parser
    record = json.loads(written["sample"].read_text())
    assert record["model"] == "bixnet" and record["model_args"]["width"] == 4
    assert record["model_args"] == {"width": 4, "stem_width": 4, "iterations": 3, "levels": 4, "in_channels": 3,
                                    "num_classes": 1}
    from nni_bixnas import create_model

    rebuilt = create_model(record["model"], gene=record["gene"], **record["model_args"])
    summary = written["summary"].read_text()
    params = sum(p.numel() for p in rebuilt.parameters())
    assert f"| final gene | {params:,} |" in summary
    # bixnas profile --gene <exported gene.txt> reports what summary.md says
    assert main(["profile", "--gene", str(written["gene"]), "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["params"] == params and f"| final gene | {row['params']:,} | {row['macs'] / 1e9:.3f} |" in summary
    assert row["model_args"]["width"] == 4
    # --model-arg overrides the header
    assert main(["profile", "--gene", str(written["gene"]), "--model-arg", "width=8", "--format", "json"]) == 0
    wider = json.loads(capsys.readouterr().out)[0]
    assert wider["params"] > params and wider["model_args"]["width"] == 8


def test_export_draws_the_wiring_and_one_pareto_panel_per_stage(tmp_path):
    import xml.etree.ElementTree as ET

    fabricate_search(tmp_path)
    written = export_experiment(EXP_ID, out_dir=tmp_path / "out", experiment_dir=tmp_path / "exps")
    with Image.open(written["architecture"]) as image:
        assert image.format == "PNG" and image.size[0] > 1000
    svg = ET.parse(written["architecture_svg"]).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    with Image.open(written["plot"]) as image:  # stage 5, stage 4, retrained: three panels in a row
        assert image.size == (3 * 470, 450)


def test_the_exported_checkpoint_has_its_run_record_and_evaluates_on_the_held_out_images(tmp_path, capsys):
    from nni_bixnas.training import fit

    run = tmp_path / "bixnas_out" / "retrain" / "seed_0"
    fit("unet", "default:n=8", model_kwargs={"base": 4, "levels": 2}, max_epochs=1, patch_size=32, out_dir=str(run),
        progress=False)
    gene = published_gene("bixnet")
    (tmp_path / "bixnas_out" / "result.json").write_text(json.dumps({
        "final_samples": [gene.to_sample()], "genes": [gene.to_text()],
        "retrained": [{"seed": 0, "default": 0.5, "checkpoint": str(run / "checkpoints" / "best.ckpt")}],
    }))
    fabricate(tmp_path / "exps", strategy_out=tmp_path / "bixnas_out")
    written = export_experiment(EXP_ID, out_dir=tmp_path / "out", experiment_dir=tmp_path / "exps" / EXP_ID,
                                program=False)
    assert written["run"] == tmp_path / "out" / "run.json"
    assert written["run"].read_text() == (run / "run.json").read_text()
    assert "- `run.json`: the checkpoint's run record" in written["summary"].read_text()
    ckpt = str(written["checkpoint"])
    assert main(["evaluate", "--checkpoint", ckpt, "--data", "default:n=8", "--no-progress"]) == 0
    assert "warning: the score includes training images" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", ckpt, "--data", "default:n=8", "--split", "val", "--format", "json",
                 "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    held_out = json.loads((run / "run.json").read_text())["val_sources"]
    assert scores["training_images"] == 0 and [r["image"] for r in scores["per_image"]] == sorted(held_out)
