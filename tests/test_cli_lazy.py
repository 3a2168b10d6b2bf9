"""``bixnas --help``, each sub-command's ``--help`` and argument errors answer without importing torch or NNI.

The check is on the modules imported (``sys.modules`` of a fresh interpreter), not on wall time: a loaded
machine makes timing tests flaky. (Measured on a busy 2-core machine: 0.03-0.09 s, against 5-6.6 s when
every ``--help`` imported torch and NNI.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Runs `bixnas ARGV` in a fresh interpreter; prints the exit status and the heavy modules it imported.
_PROBE = """
import json, runpy, sys
sys.argv = ["bixnas", *json.loads(sys.argv[1])]
try:
    runpy.run_module("nni_bixnas.cli", run_name="__main__")
    status = 0
except SystemExit as stop:
    status = stop.code
heavy = sorted(m for m in ("torch", "nni", "pytorch_lightning", "numpy", "PIL") if m in sys.modules)
print("PROBE", json.dumps({"status": status, "heavy": heavy}))
"""


def _probe(argv):
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))
    return json.loads(line[len("PROBE "):]), proc


TEST_CASES_LIGHT = [
    [["--help"], 0],
    [[], 2],
    [["train", "--help"], 0],
    [["evaluate", "--help"], 0],
    [["predict", "--help"], 0],
    [["compare", "--help"], 0],
    [["data", "--help"], 0],
    [["data", "inspect", "--help"], 0],
    [["data", "sample", "--help"], 0],
    [["export", "--help"], 0],
    [["profile", "--help"], 0],
    [["table1", "--help"], 0],
    [["cv", "--help"], 0],
    [["cv", "--epochs", "0"], 2],
    [["train", "--epochs", "x"], 2],  # an argument error
    [["evaluate", "--checkpoint", "c.ckpt"], 2],  # a required argument missing
    [["nosuch"], 2],
]


@pytest.mark.parametrize("argv, status", TEST_CASES_LIGHT)
def test_help_and_argument_errors_import_neither_torch_nor_nni(argv, status):
    result, proc = _probe(argv)
    assert result == {"status": status, "heavy": []}, proc.stderr[-2000:]


def test_the_lazy_parser_lists_what_the_modules_register():
    from nni_bixnas.cli import COMMANDS, build_parser

    full = build_parser(lazy=False)
    listed = {a.dest: a.help for a in full._subparsers._group_actions[0]._choices_actions}
    expected = {name: text for commands in COMMANDS.values() for name, text in commands}
    assert listed == expected
    assert list(listed) == list(expected)  # the order of COMMANDS


def test_data_inspect_help_lists_every_scheme_and_option(capsys):
    from nni_bixnas.cli import main
    from nni_bixnas.data.spec import PATH_OPTIONS, SCHEMES

    with pytest.raises(SystemExit):
        main(["data", "inspect", "--help"])
    text = capsys.readouterr().out
    for scheme in SCHEMES:
        assert f"\n  {scheme}:" in text or f"\n  {scheme}[" in text, scheme
    for scheme, options in PATH_OPTIONS.items():
        for option, values in options.items():
            assert f"{scheme}:PATH[?{option}={'|'.join(values)}]" in text
    assert "PATH/images/ and PATH/masks/" in text and "integer class" in text  # the folder layout


def test_train_help_lists_every_registered_model(capsys):
    from nni_bixnas import list_models
    from nni_bixnas.cli import main
    from nni_bixnas.cli.train import REGISTERED_MODELS

    assert list(REGISTERED_MODELS) == list_models()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"registered model: {', '.join(list_models())}" in text
