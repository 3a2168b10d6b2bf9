"""Does the default demo prune? The found net of a finished BiX-NAS experiment against its SuperNet.

Reads ``<experiment dir>/strategy/result.json`` and the recipe of its retraining (``retrain/seed_0/run.json``,
JSON only), retrains the SuperNet (BiO-Net++ with every skip, the search's width) with that recipe and the same
seeds through the one retraining loop (:func:`~nni_bixnas.training.evaluator.train_and_score`, as the
search's retraining does), counts both nets with the one MACs counter, and writes
``benchmarks/results/demo_pruning.md``: the MACs ratio, both retrained IoUs (best validation epoch, as the
search's headline) and their difference in points, against the goal (<= 85 % of the MACs, within 1 point).
SuperNet retrainings resume from their run folders under ``--work``.

Usage::

    nnictl create --config examples/bixnas.yml      # wait for DONE
    python benchmarks/demo_pruning.py ~/nni-experiments/<ID> --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

from nni_bixnas import create_model
from nni_bixnas.profile import count_complexity
from nni_bixnas.training.evaluator import train_and_score
from nni_bixnas.utils import atomic_write

ROOT = Path(__file__).resolve().parent
RECIPE_KEYS = ("batch_size", "split_seed", "max_epochs", "lr", "precision")  # lr_decay: the task default
ARCH_KEYS = ("in_channels", "num_classes", "width", "stem_width", "levels", "iterations", "bn_momentum")


def recipe(run: dict) -> dict:
    """``train_and_score`` keywords of a retraining's ``run.json``."""
    kwargs = {k: run[k] for k in RECIPE_KEYS if k in run}
    data_kwargs = run.get("data_kwargs", {})
    return {"data": run["data"], **kwargs, **{k: data_kwargs[k] for k in ("patch_size", "resize", "val_fraction")
                                              if data_kwargs.get(k) is not None}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment_dir", type=Path, help="a finished experiment's folder (holds strategy/result.json)")
    p.add_argument("--command", default="nnictl create --config examples/bixnas.yml", help="how it was run")
    p.add_argument("--work", type=Path, default=None, help="SuperNet run folders (default EXPERIMENT/demo_pruning)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "demo_pruning.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    strategy = args.experiment_dir / "strategy"
    result = json.loads((strategy / "result.json").read_text())
    run = json.loads((strategy / "retrain" / "seed_0" / "run.json").read_text())
    arch = {k: run["model_kwargs"][k] for k in ARCH_KEYS if k in run["model_kwargs"]}
    work = args.work or args.experiment_dir / "demo_pruning"
    seeds = [r["seed"] for r in result["retrained"]]
    found = [r["default"] for r in result["retrained"]]
    dense = [train_and_score(create_model("bionet_pp", **arch), seed=s, out_dir=str(work / f"seed_{s}"),
                             num_threads=args.threads, **recipe(run))["default"] for s in seeds]
    macs_found = count_complexity(create_model("bixnet", gene=result["genes"][0], **arch), input_size=(512, 512)).macs
    macs_dense = count_complexity(create_model("bionet_pp", **arch), input_size=(512, 512)).macs
    ratio, delta = macs_found / macs_dense, 100 * (statistics.fmean(found) - statistics.fmean(dense))

    def mean_std(values):
        return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"
    lines = [
        "# The default demo: found net vs its SuperNet",
        "",
        f"- Experiment: `{args.command}` ({args.experiment_dir.name}); read from `strategy/result.json`.",
        f"- Written by `python benchmarks/demo_pruning.py {args.experiment_dir.name} --threads {args.threads}` on "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {platform.platform()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({args.threads} thread(s), `torch.set_num_threads`).",
        f"- Recipe (the search's retraining, from its `run.json`): `{json.dumps(recipe(run))}`, model arguments "
        f"`{json.dumps(arch)}`, seeds {seeds}; IoU = best validation epoch, as the search's headline.",
        "",
        "| net | GMACs at 512² | retrained val IoU | per seed |",
        "|---|---:|---:|---|",
        f"| found net | {macs_found / 1e9:.3f} | {mean_std(found)} | {', '.join(f'{v:.4f}' for v in found)} |",
        f"| SuperNet (BiO-Net++, every skip) | {macs_dense / 1e9:.3f} | {mean_std(dense)} | "
        f"{', '.join(f'{v:.4f}' for v in dense)} |",
        "",
        f"- MACs ratio found / SuperNet: {ratio:.3f} (goal <= 0.85: {'yes' if ratio <= 0.85 else 'no'})",
        f"- IoU difference found - SuperNet: {delta:+.2f} points (goal >= -1: {'yes' if delta >= -1 else 'no'})",
    ]
    with atomic_write(args.out) as handle:
        handle.write("\n".join(lines) + "\n")
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
