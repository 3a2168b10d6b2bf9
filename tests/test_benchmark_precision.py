"""``benchmarks/precision.py`` on two small models: the table it writes, and float16 closer to float32 than
bfloat16 for U-Net (10 mantissa bits against 7)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_precision_benchmark_writes_its_table(tmp_path):
    out = tmp_path / "precision.md"
    command = [sys.executable, str(ROOT / "benchmarks" / "precision.py"), "--models", "unet", "bixnet",
               "--size", "64", "--threads", "1", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    unet = re.search(r"^\| unet \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)
    assert unet and float(unet.group(3)) < float(unet.group(1))
    assert re.search(r"^\| bixnet \| bf16 \|( [\d.]+ \|){6}$", text, re.M)
