"""``benchmarks/search_quality.py --quick`` end to end: every arm, the fidelity table, the target lines,
and a second invocation on the same work dir that only reads its cache."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "search_quality.py"

ARMS = ["BiX-NAS", "Random, MACs-matched ±10 %", "Random, unconstrained", "RegularizedEvolution (best trial)",
        "BiO-Net++ (all skips)", "BiX-Net (published gene)", "U-Net"]
TARGETS = ["BiX-NAS mean IoU >= best MACs-matched random gene", "within 1 point of BiO-Net++",
           "MACs <= 85% of BiO-Net++ at width 48"]


def run_quick(work: Path, timeout: int) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--quick", "--work", str(work), "--out", str(work / "sq.md")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_quick_run_reports_every_arm_and_reruns_from_its_cache(tmp_path):
    first = run_quick(tmp_path, timeout=1800)  # a few minutes on an idle 2-core machine; generous when loaded
    md = (tmp_path / "sq.md").read_text()
    assert "**Run complete.**" in md
    assert "- command: `python benchmarks/search_quality.py --quick" in md and "- machine: " in md
    for arm in ARMS:
        assert re.search(rf"^\| {re.escape(arm)} \|", md, re.M), f"no row for {arm}"
    assert "pending" not in md.split("## Arms")[1].split("## Targets")[0]

    taus = re.findall(r"^\| (fair|naive) \| (batch|recalibrate) \| (-?\d\.\d{3}|nan) \| (-?\d\.\d{3}|nan) \| \d+ \|$",
                      md, re.M)
    assert sorted((mode, bn) for mode, bn, _, _ in taus) == [
        ("fair", "batch"), ("fair", "recalibrate"), ("naive", "batch"), ("naive", "recalibrate")]
    assert len(re.findall(r"^- (fair|naive) SuperNet: member_bn with the higher Kendall tau: \S", md, re.M)) == 2
    for target in TARGETS:
        assert re.search(rf"^- {re.escape(target)}: (yes|no|n/a)", md, re.M), f"no target line {target!r}"

    raw = json.loads((tmp_path / "sq.json").read_text())
    assert raw["complete"] and raw["settings"]["quick"] and raw["settings"]["threads"] == 2
    assert set(raw["summary"]["arms"]) == set(ARMS)

    second = run_quick(tmp_path, timeout=600)
    ran, cached = map(int, re.search(r"units: (\d+) run, (\d+) cached", second.stdout).groups())
    assert ran == 0 and cached > 0, second.stdout[-4000:]
    assert not re.search(r"\] start ", second.stdout), "the rerun trained something again"
    assert re.search(r"units: \d+ run", first.stdout)
    assert (tmp_path / "sq.md").read_text().split("## Arms")[1] == md.split("## Arms")[1]
