"""Style: ``ruff check`` (configured in pyproject.toml, [tool.ruff]) reports nothing over the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["nni_bixnas", "tests", "examples", "benchmarks"]


def test_ruff_check_is_clean():
    pytest.importorskip("ruff", reason="ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *PATHS],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(
            f"ruff check {' '.join(PATHS)} reported problems (fix them; `ruff check --fix` sorts imports):\n"
            f"{result.stdout}{result.stderr}",
            pytrace=False,
        )
