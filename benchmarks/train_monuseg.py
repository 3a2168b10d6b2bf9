"""Retrain bixnet, bionet_pp and unet on MoNuSeg with one CPU-sized budget; write a Markdown report.

Usage::

    python benchmarks/train_monuseg.py --epochs 2 --patch-size 128 \
        --data ../shared/data/monuseg/MoNuSegTrainingData --out benchmarks/results/train_monuseg.md

The 30 training tiles are split into train/validation (``--val-fraction``, by tile). Params/MACs are
counted at 1x3x512x512 (the paper's convention); images/s is training throughput (training steps only).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from nni_bixnas import create_model
from nni_bixnas.profile import count_complexity
from nni_bixnas.training import fit
from nni_bixnas.utils import atomic_write

ROOT = Path(__file__).resolve().parent


class Throughput(pl.Callback):
    """Images per second over training steps only (no validation, no checkpointing)."""

    def __init__(self) -> None:
        self.images, self.seconds, self._t = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._t
        self.images += len(batch[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent.parent / "shared/data/monuseg/MoNuSegTrainingData"))
    parser.add_argument("--models", nargs="+", default=["bixnet", "bionet_pp", "unet"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", help="folder for the run dirs (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "results" / "train_monuseg.md"))
    args = parser.parse_args(argv)

    torch.set_num_threads(os.cpu_count() or 1)
    runs_root = Path(args.runs or tempfile.mkdtemp(prefix="bixnas-bench-"))
    rows = []
    for name in args.models:
        cx = count_complexity(create_model(name), input_size=(512, 512), in_channels=3)
        meter = Throughput()
        start = time.perf_counter()
        result = fit(name, f"monuseg:{args.data}", max_epochs=args.epochs, out_dir=runs_root / name, seed=args.seed,
                     batch_size=args.batch_size, patch_size=args.patch_size, val_fraction=args.val_fraction,
                     callbacks=[meter], progress=False, resume=False)
        rows.append({
            "model": name, "iou": result.best_iou, "dice": result.best_dice, "epoch": result.best_epoch,
            "params": cx.params, "macs": cx.macs, "ips": meter.images / max(meter.seconds, 1e-9),
            "wall": time.perf_counter() - start,
        })
        print(f"{name}: IoU {result.best_iou:.4f} Dice {result.best_dice:.4f} {rows[-1]['ips']:.2f} img/s", flush=True)

    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# Retraining on MoNuSeg (CPU budget)",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, pytorch-lightning {pl.__version__}, Python {platform.python_version()}",
        f"- Data: `{args.data}` (tiles split {1 - args.val_fraction:.0%}/{args.val_fraction:.0%} train/val by tile, "
        f"seed {args.seed}); training patches {args.patch_size}x{args.patch_size}, batch {args.batch_size}, "
        f"{args.epochs} epoch(s), Adam 1e-3, 1/(1+3e-3*epoch) decay, BCE.",
        "- Val IoU/Dice: per-image mean at the best-val-IoU epoch. Params/MACs: 1x3x512x512 (paper convention).",
        "- images/s: training steps only (forward + backward + Adam), batch-size images per step.",
        "",
        "| model | val IoU | val Dice | best epoch | params (M) | GMACs @512² | train images/s | wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['iou']:.4f} | {r['dice']:.4f} | {r['epoch']} | {r['params'] / 1e6:.3f} | "
            f"{r['macs'] / 1e9:.2f} | {r['ips']:.2f} | {r['wall']:.0f} |"
        )
    lines += ["", "A few CPU epochs on downscaled patches: these figures show the pipeline runs and its cost, "
              "not the paper's accuracy (300 epochs at 512²)."]
    with atomic_write(args.out) as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
