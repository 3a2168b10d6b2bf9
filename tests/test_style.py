"""Style: ``ruff check`` (configured in pyproject.toml, [tool.ruff]) reports nothing over the code."""

from __future__ import annotations

import ast
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


# The flow is space -> strategy -> evaluator -> experiment: what these folders hold is used by the strategies
# and the experiment, so none of it may import them (an arrow upward).
LOWER = ("training", "models", "space", "data")
UPPER = ("nni_bixnas.experiment", "nni_bixnas.strategy")


def upward_imports(source: str, module: str) -> list:
    """The modules under ``UPPER`` that ``source`` (the text of module ``module``) imports, at any depth."""
    package = module.split(".")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [name for name in names if any(name == up or name.startswith(up + ".") for up in UPPER)]
    return sorted(set(found))


def test_the_import_check_finds_an_upward_arrow():
    bad = "def f():\n    from nni_bixnas.experiment.bridge import x\n"
    assert upward_imports(bad, "nni_bixnas.training.loop") == ["nni_bixnas.experiment.bridge",
                                                              "nni_bixnas.experiment.bridge.x"]
    assert upward_imports("from ...strategy import units", "nni_bixnas.training.sub.mod") == [
        "nni_bixnas.strategy", "nni_bixnas.strategy.units"]
    assert upward_imports("from .. import strategy", "nni_bixnas.data.build") == ["nni_bixnas.strategy"]
    assert upward_imports("import nni_bixnas.strategy.units as u", "nni_bixnas.models.unet") == [
        "nni_bixnas.strategy.units"]
    assert upward_imports("from nni_bixnas.training import fit\nimport nni", "nni_bixnas.data.build") == []


@pytest.mark.parametrize("folder", LOWER)
def test_no_module_below_the_strategies_imports_them_or_the_experiment(folder):
    offences = {}
    for path in sorted((ROOT / "nni_bixnas" / folder).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = upward_imports(path.read_text(), module + (".__init__" if parts[-1] == "__init__" else ""))
        if found:
            offences[str(path.relative_to(ROOT))] = found
    assert not offences, f"modules of nni_bixnas/{folder}/ import from {UPPER}: {offences}"
