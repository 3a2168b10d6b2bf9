"""``bixnas export`` writes the retrained net as a ``torch.export`` program that loads with torch alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from nni_bixnas.experiment.deploy import export_program, training_input_size
from nni_bixnas.experiment.export import export_experiment
from nni_bixnas.space.gene import published_gene
from nni_bixnas.training.checkpoint import load_task
from nni_bixnas.training.task import SegmentationTask
from test_experiment_export import EXP_ID, WIDTH4, fabricate_search

# Runs in a fresh interpreter: only torch is imported, then the program is loaded and run on saved inputs.
LOADER = """
import sys, torch
net = torch.export.load(sys.argv[1]).module()
outputs = [net(x) for x in torch.load(sys.argv[2])]
torch.save(outputs, sys.argv[3])
assert "nni_bixnas" not in sys.modules and "nni" not in sys.modules, sorted(sys.modules)
print("loaded without nni_bixnas")
"""


def _retrained_checkpoint(run_dir: Path, patch_size: int = 64) -> Path:
    """A retraining run folder as :func:`~nni_bixnas.training.fit` leaves it: best checkpoint and run.json."""
    torch.manual_seed(0)
    task = SegmentationTask("bixnet", model_kwargs={**WIDTH4, "gene": published_gene("bixnet")})
    for module in task.modules():  # non-trivial running statistics, so eval mode matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = run_dir / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams), "epoch": 1}, path)
    (run_dir / "run.json").write_text(json.dumps({"data_kwargs": {"patch_size": patch_size, "resize": None}}))
    return path


def _run_alone(program: Path, inputs: list, tmp_path: Path) -> list:
    torch.save(inputs, tmp_path / "inputs.pt")
    done = subprocess.run([sys.executable, "-c", LOADER, str(program), str(tmp_path / "inputs.pt"),
                           str(tmp_path / "outputs.pt")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded without nni_bixnas" in done.stdout
    return torch.load(tmp_path / "outputs.pt")


def test_export_writes_a_program_that_runs_without_nni_bixnas(tmp_path):
    checkpoint = _retrained_checkpoint(tmp_path / "bixnas_out" / "retrain" / "seed_1")
    runs = [{"seed": 0, "default": 0.70, "checkpoint": str(tmp_path / "absent.ckpt")},
            {"seed": 1, "default": 0.72, "checkpoint": str(checkpoint)}]
    fabricate_search(tmp_path, retrained=runs)
    written = export_experiment(EXP_ID, out_dir=tmp_path / "out", experiment_dir=tmp_path / "exps")
    assert written["program"] == tmp_path / "out" / "model.pt2" and written["checkpoint"].name == "best.ckpt"
    info = json.loads(written["program_info"].read_text())
    assert info["input"]["example_size"] == [64, 64] and info["input"]["dynamic_size"]
    assert info["input"]["size_multiple"] == 32 and info["output"]["values"] == "logits"
    assert info["model_name"] == "bixnet" and info["model_kwargs"]["width"] == 4
    # the training size, and other multiples of 32 and batch sizes (dynamic height, width and batch)
    inputs = [torch.rand(2, 3, 64, 64), torch.rand(1, 3, 96, 128), torch.rand(3, 3, 128, 64)]
    outputs = _run_alone(written["program"], inputs, tmp_path)
    net = load_task(checkpoint).model.eval()
    with torch.no_grad():
        for x, y in zip(inputs, outputs):
            assert y.shape == (x.shape[0], 1, *x.shape[-2:])
            torch.testing.assert_close(y, net(x), atol=1e-5, rtol=0)
    assert "model.pt2" in written["summary"].read_text()


def test_program_without_dynamic_sizes_falls_back_to_the_example_size(tmp_path):
    class Fixed(torch.nn.Module):  # reshapes to a constant: no dynamic height/width possible
        in_channels = 1

        def forward(self, x):
            return x.reshape(x.shape[0], 1, 64, 64) * 2

    info = export_program(Fixed(), tmp_path / "model.pt2", (64, 64))
    assert info["input"]["dynamic_size"] is False and info["input"]["example_size"] == [64, 64]
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(program(x), x * 2)


def test_training_input_size_reads_the_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert training_input_size(run / "checkpoints" / "best.ckpt") == (512, 512)  # no run.json: the default
    (run / "run.json").write_text(json.dumps({"data_kwargs": {"patch_size": [100, 64]}}))
    assert training_input_size(run / "checkpoints" / "best.ckpt") == (128, 64)  # rounded up to multiples of 32
    (run / "run.json").write_text(json.dumps({"data_kwargs": {"patch_size": None, "resize": 256}}))
    assert training_input_size(run / "checkpoints" / "best.ckpt") == (256, 256)
