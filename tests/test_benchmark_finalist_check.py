"""``benchmarks/finalist_check.py``: its options and results file, and its summary (exact values). The run
itself is in ``test_benchmark_search_quality.py``'s quick run (it needs a finished search_quality run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import finalist_check as fc  # noqa: E402


def test_names_a_missing_or_broken_results_file(tmp_path):
    with pytest.raises(SystemExit, match=r"finalist_check: .*sq\.json does not exist; run benchmarks/search_quality"):
        fc.main(["--results", str(tmp_path / "sq.json")])
    (tmp_path / "sq.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"finalist_check: .*sq\.json is not valid JSON"):
        fc.main(["--results", str(tmp_path / "sq.json")])


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be a positive int, got 0"),
    (["--tolerance", "-0.1"], "--tolerance must be >= 0, got -0.1"),
])
def test_bad_options_are_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fc.parse_args(flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def _pick(gene, macs, runs):
    return {"gene": gene, "macs48": macs, "runs": [{"test_iou": t, "val_iou": v} for t, v in runs]}


def test_summary_pairs_by_search_seed_and_counts_what_changed():
    seeds = {
        "0": {"finalists": {"order": [0, 1]}, "picks": {
            fc.CHECKED: _pick("a", 80, [(0.5, 0.4), (0.4, 0.3)]), fc.PHASE2: _pick("a", 80, [(0.5, 0.4), (0.4, 0.3)]),
            fc.RE: _pick("b", 90, [(0.5, 0.4), (0.5, 0.4)]), fc.RSWS: _pick("c", 70, [(0.2, 0.2), (0.3, 0.2)]),
            fc.RE_BEFORE: _pick("b", 90, [(0.5, 0.4), (0.5, 0.4)])}},
        "1": {"finalists": {"order": [1, 0]}, "picks": {
            fc.CHECKED: _pick("d", 60, [(0.4, 0.3), (0.5, 0.4)]), fc.PHASE2: _pick("e", 90, [(0.0, 0.01), (0.1, 0.02)]),
            fc.RE: _pick("f", 100, [(0.4, 0.3), (0.4, 0.3)]), fc.RSWS: _pick("g", 50, [(0.5, 0.4), (0.5, 0.4)]),
            fc.RE_BEFORE: _pick("f", 100, [(0.4, 0.3), (0.4, 0.3)])}},
    }
    summary = fc.summarise({"seeds": seeds, "ref_macs": 100})
    assert summary["changed"] == 1
    arms = summary["arms"]
    assert arms[fc.CHECKED]["seed_test_iou"] == pytest.approx({"0": 0.45, "1": 0.45})
    assert arms[fc.CHECKED]["macs_ratio"] == pytest.approx({"0": 0.8, "1": 0.6})
    assert arms[fc.PHASE2]["collapsed"] == 2 and arms[fc.CHECKED]["collapsed"] == 0
    assert summary["values"][fc.RE] == pytest.approx(0.45) and summary["values"][fc.RSWS] == pytest.approx(0.375)
    assert list(summary["targets"].values()) == [True, True, True]  # 0.45 >= 0.45, 0.7 <= 0.85, 0.45 > 0.375
    assert arms[fc.CHECKED]["hypervolume"] == pytest.approx(0.4 * 0.45)  # (0.45, 0.6) dominates (0.45, 0.8)


def test_readme_search_renders_the_check_from_its_results():
    import readme_search

    assert readme_search.finalist_lines(None)[0].endswith("not run.")
    picks = {name: _pick("a", 50, [(0.4, 0.3), (0.6, 0.5)]) for name in fc.ARMS}
    state = {"ref_macs": 100, "seeds": {"0": {"budget_s": 700.4, "finalist_s": 30.2, "picks": picks,
                                             "finalists": {"ious": [0.05, 0.25], "order": [1, 0]}}}}
    check = {"complete": True, "epochs": 2, "tolerance": 0.05, "command": "python benchmarks/finalist_check.py",
             "state": state, "summary": fc.summarise(state)}
    lines = readme_search.finalist_lines(check)
    assert "`BiXNAS(finalist_epochs=2, finalist_tolerance=0.05)`" in lines[0] and "complete)" in lines[0]
    assert lines[4] == "| 0 | 700 | 30 | 0.0500, 0.2500 | 2 | " + " | ".join(["0.5000 / 0.500"] * 5) + " |"
    assert lines[8] == "| BiX-NAS + finalist check | 0.5000 ± — | 0.500 | 0.2500 | 0 | — |"
    assert lines[-3:] == ["The check changed the pick on 1 of 1 search seeds.", "",
                          "Targets: BiX-NAS + finalist check mean test IoU >= RegularizedEvolution's (same budget): "
                          "yes; its mean MACs <= 85% of BiO-Net++'s: yes; its mean test IoU > RS-WS's (same "
                          "budget): no."]
