"""How far mixed precision moves the networks' outputs and gradients from float32, per registered model.

For every model (default: unet, bionet, bionet_pp, bixnet at their paper widths), freshly initialised and
in training mode, one batch of ``--batch`` random images at ``--size`` px: the relative error
``|y - y_32| / |y_32|`` of the logits, and of the parameter gradients of a BCE loss, under CPU autocast in
bfloat16 and float16, against the float32 forward of the same weights. Also the relative error of the
features after every stage of BiO-Net++ / BiX-Net, to show where it grows. Results go to
``benchmarks/results/precision.md`` with machine, command and date; ``torch.set_num_threads(--threads)``.

Usage: python benchmarks/precision.py [--size 128] [--batch 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import sys
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn

from nni_bixnas import create_model
from nni_bixnas.utils import atomic_write

RESULT = Path(__file__).parent / "results" / "precision.md"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
LOSS = nn.BCEWithLogitsLoss()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def run(model: nn.Module, x: torch.Tensor, target: torch.Tensor, dtype) -> Dict[str, torch.Tensor]:
    model = copy.deepcopy(model)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        logits = model(x)
    LOSS(logits.float(), target).backward()
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    return {"logits": logits.detach(), "grads": grads}


@torch.no_grad()
def stage_errors(model: nn.Module, x: torch.Tensor, dtype) -> List[float]:
    """Relative error of every stage's output (all levels together) of a BiO-Net++ network."""
    errors = []
    for stage in range(1, model.n_stages + 1):
        reference = torch.cat([t.flatten() for t in model.forward_head(x, stage).previous])
        with torch.autocast("cpu", dtype=dtype):
            low = torch.cat([t.flatten().float() for t in model.forward_head(x, stage).previous])
        errors.append(relative(low, reference))
    return errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["unet", "bionet", "bionet_pp", "bixnet"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    target = (torch.rand(args.batch, 1, args.size, args.size, generator=g) > 0.6).float()
    rows, stages = [], []
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, in_channels=3, num_classes=1).train()
        reference = run(model, x, target, None)
        row = [name]
        for label, dtype in DTYPES.items():
            low = run(model, x, target, dtype)
            row += [relative(low["logits"], reference["logits"]), relative(low["grads"], reference["grads"])]
        rows.append(row)
        if hasattr(model, "forward_head"):
            stages.append([name, *[stage_errors(model, x, dtype) for dtype in DTYPES.values()]])
        print(name, " ".join(f"{v:.4f}" for v in row[1:]), flush=True)
    n_stages = len(stages[0][1]) if stages else 0
    lines = [
        "# Mixed precision vs float32: relative error of logits and gradients at initialisation",
        "",
        f"- command: `python benchmarks/precision.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; machine: {platform.platform()}, "
        f"torch {torch.__version__}, CPU autocast, `torch.set_num_threads({args.threads})`",
        f"- one batch of {args.batch} random {args.size}x{args.size} images, freshly initialised models (seed 0) in "
        "training mode, BCE loss; relative error |y - y_fp32| / |y_fp32| of the logits and of all parameter "
        "gradients",
        "",
        "| model | bf16 logits | bf16 gradients | fp16 logits | fp16 gradients |",
        "|---|---:|---:|---:|---:|",
        *[f"| {r[0]} | " + " | ".join(f"{v:.4f}" for v in r[1:]) + " |" for r in rows],
        "",
        "Relative error of each stage's output (BiO-Net++ family; stage 1 .. 2T):",
        "",
        "| model | autocast | " + " | ".join(f"stage {s + 1}" for s in range(n_stages)) + " |",
        "|---|---|" + "---:|" * n_stages,
    ]
    for name, *errors in stages:
        for label, values in zip(DTYPES, errors):
            lines.append(f"| {name} | {label} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    lines.append("")
    with atomic_write(args.out) as handle:
        handle.write("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
