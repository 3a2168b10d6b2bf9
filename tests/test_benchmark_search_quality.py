"""``benchmarks/search_quality.py --quick`` end to end: every arm on a held-out test split, the fidelity table,
the target lines, and a second invocation on the same work dir that only reads its cache."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "search_quality.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

SEARCHING = ["BiX-NAS", "RegularizedEvolution", "RS-WS"]
FIXED = ["BiO-Net++ (all skips)", "BiX-Net (published gene)", "Random nets, narrowed", "Random nets, full space"]
TARGETS = ["BiX-NAS mean test IoU >= RegularizedEvolution's", "BiX-NAS mean MACs <= 85% of BiO-Net++'s",
           "BiX-NAS mean test IoU > RS-WS's"]
VARIANTS = ["fair, fresh", "naive, fresh", "fair, inherited", "fair, inherited, 2x epochs",
            "fair, inherited, lr / members", "null proxy: fewer MACs ranks higher"]


def run_quick(work: Path, timeout: int) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--work", str(work), "--out",
               str(work / "sq.md")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_quick_run_reports_every_arm_on_test_and_reruns_from_its_cache(tmp_path):
    first = run_quick(tmp_path, timeout=1800)  # about a minute on an idle 2-core machine; generous when loaded
    md = (tmp_path / "sq.md").read_text()
    assert "**Run complete.**" in md
    assert "- command: `python benchmarks/search_quality.py --quick" in md and "- machine: " in md
    assert "scored at the **final epoch** (`last.ckpt`) on validation and test" in md
    for arm in SEARCHING:
        assert re.search(rf"^\| {re.escape(arm)} \| 2/2 \| \d\.\d{{4}} ± \d\.\d{{4}} \|", md, re.M), f"no row {arm}"
        seed_rows = rf"^\| [01] \| \d+ \| {re.escape(arm)} \| [0-9a-f]{{10}} \| \d\.\d{{3}} \|"
        assert len(re.findall(seed_rows, md, re.M)) == 2
    for arm in FIXED:
        assert re.search(rf"^\| {re.escape(arm)} \| 2 \| \d\.\d{{4}} ± ", md, re.M), f"no row for {arm}"
    for variant in VARIANTS:
        assert re.search(rf"^\| {re.escape(variant)} \| (-?\d\.\d{{3}}|—) \|", md, re.M), f"no fidelity row {variant}"
    for variant in VARIANTS[:-1]:  # each selection rule's pick, retrained: validation / test IoU / MACs ratio
        assert re.search(rf"^\| {re.escape(variant)} \| \d\.\d{{4}} / \d\.\d{{4}} / \d\.\d{{3}} \|", md, re.M), variant
    assert re.search(r"^\| oracle: best standalone validation IoU \| \d\.\d{4} / ", md, re.M)
    for variant in ("code", "paper", "code, tau 1 -> 0.1"):  # Phase 1's selection matrices, per search seed
        row = rf"^\| [01] \| {re.escape(variant)} \| \d\.\d{{4}} \| \d\.\d{{4}} \| -?\d\.\d{{4}} \| \d+ \|$"
        assert len(re.findall(row, md, re.M)) == 2, variant
    for target in TARGETS:
        assert re.search(rf"^- {re.escape(target)}: (yes|no)$", md, re.M), f"no target line {target!r}"

    raw = json.loads((tmp_path / "sq.json").read_text())
    assert raw["complete"] and raw["settings"]["quick"] and raw["settings"]["threads"] == 1
    assert set(raw["summary"]["arms"]) == set(SEARCHING)
    seeds = raw["state"]["seeds"]
    for k in ("0", "1"):  # RE's budget is that seed's own BiX-NAS wall time, in this run
        assert seeds[k]["picks"]["RegularizedEvolution"]["search_s"] >= 0.0
        assert raw["state"]["seeds"][k]["budget_s"] == seeds[k]["search"]["budget_s"]
        for pick in seeds[k]["picks"].values():
            assert [r["seed"] for r in pick["runs"]] == [0, 1]
            assert all(0.0 <= r["test_iou"] <= 1.0 and r["test_images"] == 4 for r in pick["runs"])
    assert len(raw["state"]["fidelity"]["standalone"]) == 4

    second = run_quick(tmp_path, timeout=600)
    ran, cached = map(int, re.search(r"units: (\d+) run, (\d+) cached", second.stdout).groups())
    assert ran == 0 and cached > 0, second.stdout[-4000:]
    assert not re.search(r"\] start ", second.stdout), "the rerun trained something again"
    assert re.search(r"units: \d+ run", first.stdout)
    assert (tmp_path / "sq.md").read_text().split("## Searching arms")[1] == md.split("## Searching arms")[1]

    # the recipe benchmark on this run's nets: its 'ce' retrainings are this run's units, the 'dice_ce' ones new
    recipe = [sys.executable, str(ROOT / "benchmarks" / "retrain_recipe.py"), "--results", str(tmp_path / "sq.json"),
              "--out", str(tmp_path / "rr.md")]
    result = subprocess.run(recipe, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    nets = 3 * 2 + 2  # 3 arms x 2 search seeds, 2 references
    assert re.search(rf"units: {nets * 2} run, {nets * 2} cached", result.stdout), result.stdout[-2000:]
    rr = (tmp_path / "rr.md").read_text()
    for loss in ("ce", "dice_ce"):
        assert re.search(rf"^\| {loss} \| {nets * 2} \| \d+ \| ", rr, re.M), loss
    for arm in SEARCHING + FIXED[:2]:
        assert re.search(rf"^\| {re.escape(arm)} \| \d\.\d{{3}} \| \d\.\d{{4}} ± ", rr, re.M), arm
    raw = json.loads((tmp_path / "rr.json").read_text())
    assert raw["complete"] and [len(raw["state"]["runs"][loss]) for loss in ("ce", "dice_ce")] == [nets * 2] * 2
    ce_runs = {(r["net"], r["seed"]): r["test_iou"] for r in raw["state"]["runs"]["ce"]}
    assert ce_runs[(0, 0)] == seeds["0"]["picks"]["BiX-NAS"]["runs"][0]["test_iou"]  # the same unit

    # the finalist check on this run's searches: Phase 1 and 2 are not run again, RE and RS-WS are (new budget)
    check = [sys.executable, str(ROOT / "benchmarks" / "finalist_check.py"), "--results", str(tmp_path / "sq.json"),
             "--out", str(tmp_path / "fc.md"), "--epochs", "1"]
    result = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert not re.search(r"start  (BiX-NAS search|Phase 1)", result.stdout)
    assert len(re.findall(r"done   finalist check, search seed [01] \(1 epochs\)", result.stdout)) == 2
    fc_md = (tmp_path / "fc.md").read_text()
    assert "- complete: yes" in fc_md
    assert len(re.findall(r"^\| [01] \| \d+ \| \d+ \| \d\.\d{4}, \d\.\d{4} \| [12] \|", fc_md, re.M)) == 2
    for arm in ("BiX-NAS + finalist check", "BiX-NAS, Phase 2's pick", "RegularizedEvolution", "RS-WS"):
        assert re.search(rf"^\| {re.escape(arm)} \| \d\.\d{{4}} ± \d\.\d{{4}} \| \d\.\d{{3}} \|", fc_md, re.M), arm
    raw = json.loads((tmp_path / "fc.json").read_text())
    for k in ("0", "1"):
        phase2 = raw["state"]["seeds"][k]["picks"]["BiX-NAS, Phase 2's pick"]
        assert phase2["runs"] == seeds[k]["picks"]["BiX-NAS"]["runs"]  # the run's own retrainings, cached
        assert raw["state"]["seeds"][k]["finalist_s"] > 0


@pytest.mark.parametrize(
    "flags, changed",
    [
        ([], {}),  # the authors' last stage, 1 SE: the keywords (and so the run folders) of earlier runs
        (["--keep-sequential-last", "false"], {"keep_sequential_last": False}),
        (["--selection-se", "2"], {"selection_se": 2.0}),
        (["--keep-sequential-last", "false", "--selection-se", "2"], {"keep_sequential_last": False,
                                                                      "selection_se": 2.0}),
        (["--selection", "iou", "--selection-se", "2"], {"selection": "iou"}),  # no SE without one_se
    ],
)
def test_bixnas_arm_keywords(flags, changed):
    import search_quality as sq

    s = sq.resolve(sq.parse_args(["--quick", *flags]))
    before = {"samples": 3, "epochs": 1, "keep": (3, 2), "lr_per_member": False, "keep_sequential_last": True,
              "member_bn": "recalibrate", "inherit_weights": True, "selection": "one_se"}
    assert sq.phase2_kwargs(s) == {**before, **changed}


def test_bad_selection_se_is_one_line():
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--selection-se", "-1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1] == (
        "search_quality: --selection-se -1.0: expected a number >= 0")


@pytest.mark.parametrize(
    "points, area",
    [
        ([], 0.0),
        ([(0.5, 1.0)], 0.0),                   # at the reference ratio: nothing dominated
        ([(0.5, 0.8)], 0.1),                   # (1 - 0.8) x 0.5
        ([(0.5, 0.8), (0.4, 0.6)], 0.18),      # 0.4 x 0.4 + 0.2 x 0.1
        ([(0.5, 0.8), (0.6, 0.9), (0.3, 0.9)], 0.11),  # a dominated point adds nothing
    ],
)
def test_hypervolume(points, area):
    from search_quality import hypervolume

    assert hypervolume(points) == pytest.approx(area, abs=1e-12)


@pytest.mark.parametrize(
    "x, y, noise, tau, pairs",
    [
        ([1, 2, 3], [0.1, 0.2, 0.3], 0.0, 1.0, 3),
        ([3, 2, 1], [0.1, 0.2, 0.3], 0.0, -1.0, 3),
        ([1, 3, 2], [0.1, 0.2, 0.3], 0.15, 1.0, 1),   # only the pair (0.1, 0.3) differs by more than the noise
        ([1, 2, 3], [0.1, 0.1, 0.1], 0.0, None, 0),
    ],
)
def test_sparse_tau_leaves_out_ties_within_noise(x, y, noise, tau, pairs):
    from search_quality import sparse_tau

    assert sparse_tau(x, y, noise) == (tau, pairs)


def test_readme_search_section_quotes_only_the_results_files():
    """Every IoU, ratio and hypervolume in README's "Does the search beat chance?" is in a results file."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Does the search beat chance?"):readme.index("## A short tour")]
    names = ("search_quality.md", "demo_pruning.md", "retrain_recipe.md", "search_quality_pruning.md",
             "retrain_recipe_pruning.md", "finalist_check.md")
    results = "".join((ROOT / "benchmarks" / "results" / name).read_text() for name in names
                      if (ROOT / "benchmarks" / "results" / name).is_file())
    figures = re.findall(r"(?<![\d.])[01]\.\d{3,4}(?: ± \d\.\d{4})?(?![\d])", section)
    assert len(figures) > 10
    missing = [f for f in figures if f not in results]
    assert not missing, f"README figures not in benchmarks/results: {missing}"


def test_readme_search_section_is_the_one_its_generator_writes_from_the_results():
    """README's section is ``benchmarks/readme_search.py``'s output (so no figure or placeholder is typed)."""
    import readme_search

    assert readme_search.main(["--check"]) == 0, "run python benchmarks/readme_search.py"


def test_readme_search_generator_refuses_a_demo_file_without_its_rows():
    import readme_search

    with pytest.raises(SystemExit, match="demo_pruning.md lacks the found net"):
        readme_search.demo_figures("| found net | 1.0 |")


def test_fidelity_picks_report_the_retrained_iou_of_each_rules_pick():
    """``iou`` takes the best shared score (member 0); ``one_se`` at 1+ SE the cheaper member 1 within noise of
    it, never member 2 (far below); the mean row averages the variants and the oracle is the best retraining."""
    from search_quality import fidelity_picks

    run = lambda val, test: {"val_iou": val, "test_iou": test}  # noqa: E731
    fidelity = {
        "standalone": [[run(0.4, 0.3)], [run(0.45, 0.35)], [run(0.1, 0.2)]],
        "macs48": [100, 90, 80],
        "variants": [{"variant": "v", "iou": [0.5, 0.49, 0.3],
                      "image_iou": [[0.5, 0.5, 0.6, 0.4], [0.49, 0.52, 0.55, 0.40], [0.3, 0.3, 0.3, 0.3]]},
                     {"variant": "old", "iou": [0.5, 0.49, 0.3], "image_iou": [None, None, None]}],
    }
    rows = fidelity_picks(fidelity)
    assert [r["variant"] for r in rows] == ["v", "mean over the variants above",
                                            "oracle: best standalone validation IoU"]
    picks = {p["rule"]: (p["val_iou"], p["test_iou"], p["macs_ratio"]) for p in rows[0]["picks"]}
    assert picks == {"iou": (0.4, 0.3, 1.0), "one_se (0 SE)": (0.4, 0.3, 1.0), "one_se (1 SE)": (0.45, 0.35, 0.9),
                     "one_se (2 SE)": (0.45, 0.35, 0.9), "one_se (3 SE)": (0.45, 0.35, 0.9)}
    assert rows[1]["picks"] == rows[0]["picks"]
    assert rows[2]["picks"] == [{"rule": "oracle", "val_iou": 0.45, "test_iou": 0.35, "macs_ratio": 0.9}]


def test_readme_search_names_a_missing_or_broken_results_file(tmp_path, monkeypatch):
    import readme_search

    monkeypatch.setattr(readme_search, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match=r"search_quality\.json does not exist"):
        readme_search.main(["--check"])
    (tmp_path / "search_quality.json").write_text("{not json")
    (tmp_path / "demo_pruning.md").write_text("")
    with pytest.raises(SystemExit, match=r"search_quality\.json is not valid JSON"):
        readme_search.main(["--check"])


def test_retrain_recipe_names_a_missing_or_broken_results_file(tmp_path):
    import retrain_recipe

    with pytest.raises(SystemExit, match=r"sq\.json does not exist; run benchmarks/search_quality\.py first"):
        retrain_recipe.main(["--results", str(tmp_path / "sq.json")])
    (tmp_path / "sq.json").write_text("[1]")
    with pytest.raises(SystemExit, match=r"sq\.json holds no finished search_quality run"):
        retrain_recipe.main(["--results", str(tmp_path / "sq.json")])


def test_retrain_recipe_summary_counts_collapse_and_pairs_by_search_seed():
    import retrain_recipe

    nets = [{"arm": "BiX-NAS", "search_seed": 0, "macs_ratio": 0.9},
            {"arm": "BiX-NAS", "search_seed": 1, "macs_ratio": 0.8},
            {"arm": "RegularizedEvolution", "search_seed": 0, "macs_ratio": 0.8},
            {"arm": "RegularizedEvolution", "search_seed": 1, "macs_ratio": 0.8}]
    runs = [{"net": n, "seed": r, "val_iou": v, "test_iou": t}
            for n, r, v, t in [(0, 0, 0.01, 0.0), (0, 1, 0.4, 0.5), (1, 0, 0.3, 0.3), (1, 1, 0.3, 0.4),
                               (2, 0, 0.5, 0.5), (2, 1, 0.5, 0.6), (3, 0, 0.04, 0.1), (3, 1, 0.5, 0.5)]]
    summary = retrain_recipe.summarise({"nets": nets, "runs": {"ce": runs}})["ce"]
    assert summary["retrainings"] == 8 and summary["collapsed"] == 2
    assert summary["arms"]["BiX-NAS"]["test"] == pytest.approx({"0": 0.25, "1": 0.35})
    assert summary["arms"]["RegularizedEvolution"]["test"] == pytest.approx({"0": 0.55, "1": 0.3})
    assert summary["p_bixnas_vs_re"] == pytest.approx(0.6051, abs=1e-3)  # ttest_rel([.25, .35], [.55, .3])


def test_readme_search_renders_the_recipe_table_from_its_results():
    import readme_search

    assert readme_search.recipe_lines(None) == [
        "The retraining recipe with cross-entropy + soft Dice (`benchmarks/retrain_recipe.py`): not run."]
    nets = [{"arm": "BiX-NAS", "search_seed": 0}, {"arm": "BiO-Net++ (all skips)", "search_seed": None}]
    runs = {"ce": [{"net": 1, "seed": 0, "test_iou": 0.2}, {"net": 1, "seed": 1, "test_iou": 0.4}]}
    summary = {"ce": {"retrainings": 4, "collapsed": 1, "p_bixnas_vs_re": None,
                      "arms": {"BiX-NAS": {"test": {"0": 0.3}}, "BiO-Net++ (all skips)": {"test": {"None": 0.3}}}}}
    lines = readme_search.recipe_lines({"complete": True, "state": {"nets": nets, "runs": runs}, "summary": summary})
    assert lines[-3:] == ["| loss | collapsed | BiX-NAS | BiO-Net++ (all skips) | BiX-NAS vs RE, p |",
                          "|---|---:|---:|---:|---:|", "| ce | 1 of 4 | 0.3000 ± — | 0.3000 ± 0.1414 | — |"]


def test_readme_search_renders_the_pruning_run_from_its_results():
    import readme_search

    assert readme_search.pruning_lines(None)[0].endswith("not run.")
    arm = {"seed_test_iou": {"0": 0.4, "1": 0.6}, "macs_ratio": {"0": 0.8, "1": 0.7}, "hypervolume": 0.1}
    run = {"complete": False, "command": "python benchmarks/search_quality.py --selection-se 2",
           "settings": {"keep_sequential_last": False, "selection_se": 2.0},
           "summary": {"arms": {"BiX-NAS": arm, "RegularizedEvolution": {**arm, "p_vs_bixnas": 0.5}},
                       "fixed": {"BiO-Net++ (all skips)": {"test_iou": [0.5], "macs_ratio": 1.0},
                                 "Random nets, narrowed": {"test_iou": [0.1, 0.3], "macs_ratio": 0.9}},
                       "targets": {"BiX-NAS mean test IoU >= RegularizedEvolution's": True, "other": None}}}
    lines = readme_search.pruning_lines(run)
    assert "`keep_sequential_last=False`, `selection_se=2`" in lines[0] and "**incomplete**" in lines[0]
    assert lines[2:] == [
        "| arm | search seeds | test IoU | MACs / BiO-Net++ | hypervolume | p vs BiX-NAS |",
        "|---|---:|---:|---:|---:|---:|",
        "| BiX-NAS | 2 | 0.5000 ± 0.1414 | 0.750 | 0.1000 | — |",
        "| RegularizedEvolution | 2 | 0.5000 ± 0.1414 | 0.750 | 0.1000 | 0.500 |",
        "| Random nets, narrowed (this space) | 2 nets | 0.2000 ± 0.1414 | 0.900 | | |", "",
        "Per search seed, each arm's pick: test IoU (mean of its retrainings) / MACs over BiO-Net++'s:", "",
        "| search seed | BiX-NAS | RegularizedEvolution |", "|---:|---|---|",
        "| 0 | 0.4000 / 0.800 | 0.4000 / 0.800 |", "| 1 | 0.6000 / 0.700 | 0.6000 / 0.700 |", "",
        "Targets of this run: BiX-NAS mean test IoU >= RegularizedEvolution's: yes; other: pending."]


def test_collapsed_sentence_leaves_out_groups_that_did_not_run():
    import search_quality as sq

    groups = {"searched picks and references": (2, 22), "random nets": (0, 8), "ranking-fidelity members": (0, 0)}
    c = {"collapsed": 2, "runs": 30, "below": 0.05, "groups": groups}
    assert sq.collapsed_sentence(c) == (
        "2 of the run's 30 retrainings end with a final-epoch validation IoU below 0.05 (nearly all background): "
        "searched picks and references 2 of 22; random nets 0 of 8.")


def test_report_only_keeps_the_runs_command_and_start(tmp_path):
    from search_quality import date_line, run_meta

    out = tmp_path / "sq.json"
    first = run_meta("search_quality.py", ["--threads", "2"], out, report_only=False)
    assert first["command"] == "python benchmarks/search_quality.py --threads 2" and "reported" not in first
    out.write_text(json.dumps({"started": "2026-01-02T03:04:05"}))
    again = run_meta("search_quality.py", ["--threads", "2", "--report-only"], out, report_only=True)
    assert again["command"] == first["command"] and again["started"] == "2026-01-02T03:04:05"
    assert date_line(again).startswith("- date: started 2026-01-02T03:04:05 (rewritten from the cache by "
                                       "`--report-only` ")
    out.write_text("{broken")
    assert run_meta("x.py", ["--report-only"], out, report_only=True)["command"] == "python benchmarks/x.py"
