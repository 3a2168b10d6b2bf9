"""``benchmarks/gpu.py --device cpu --quick`` end to end, so that the device script cannot rot between the
rare runs on a lent GPU: every section it can run on a CPU, and a results file in the documented form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MONUSEG = ROOT.parent / "shared" / "data" / "monuseg" / "MoNuSegTrainingData"


@pytest.mark.slow
def test_device_script_runs_quick_on_cpu(tmp_path):
    out = tmp_path / "gpu.md"
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick", "--threads", "1",
               "--budget", "3600", "--out", str(out), "--epochs", "1"]
    if MONUSEG.is_dir():
        command += ["--monuseg", str(MONUSEG)]
    # a generous limit: the quick run takes about 30 s here, much longer on a loaded machine
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "wrote" in result.stdout and "throughput bixnet batch 2 fp32" in result.stdout  # progress lines
    text = out.read_text()
    for heading in ("## Training images/s", "## One Phase 2 step, stage 1, s=3",
                    "## BiX-Net retraining on MoNuSeg (32-true)"):
        assert heading in text
    assert "bixnet/unet train images/s ratio at batch 2, fp32: " in text
    for step in ("low_memory", "plain", "batched", "naive"):
        assert f"| {step} | " in text
    assert "- not measured (CUDA only, or no time left)" in text
    if MONUSEG.is_dir():
        assert "| 1 | " in text.split("## BiX-Net retraining on MoNuSeg (32-true)")[1]
