"""Table 1 on MoNuSeg at a CPU budget: ``bixnas table1``'s machinery on the 30 training tiles; writes a report.

Usage::

    python benchmarks/table1_cpu.py                    # defaults: 4 epochs, seeds 0 1, 128 px, 64 px crops
    python benchmarks/table1_cpu.py --epochs 3 --models unet bixnet --runs /tmp/t1   # --runs keeps (resumes) runs

The official MoNuSeg test set is not in ``../shared/data`` (see its README): the 30 training tiles are split
by tile into a test part (``--test-fraction``, seeded by ``--split-seed``) and the rest, which
:func:`~nni_bixnas.comparison.table1.run_table1` splits into train and validation by tile. The two parts are
folders of symbolic links in a temporary folder (the data is never copied). No TNBC is available here, so
the TNBC columns stay empty. The report, ``benchmarks/results/table1_cpu.md``, is written by this script only.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from nni_bixnas.cli.train import _show_training_log
from nni_bixnas.comparison.table1 import format_table, run_table1
from nni_bixnas.utils import atomic_write

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "monuseg" / "MoNuSegTrainingData"


def split_tiles(data: Path, folder: Path, test_fraction: float, seed: int):
    """Link the tiles of ``data`` (Tissue_Images/*.tif, Binary_masks/*.png) into ``folder/{trainval,test}``."""
    stems = sorted(p.stem for p in (data / "Tissue_Images").glob("*.tif"))
    n_test = max(1, round(test_fraction * len(stems)))
    order = np.random.default_rng(seed).permutation(len(stems))
    test = {stems[i] for i in order[:n_test]}
    for stem in stems:
        part = folder / ("test" if stem in test else "trainval")
        for sub, suffix in (("Tissue_Images", ".tif"), ("Binary_masks", ".png")):
            (part / sub).mkdir(parents=True, exist_ok=True)
            (part / sub / (stem + suffix)).symlink_to((data / sub / (stem + suffix)).resolve())
    return folder / "trainval", folder / "test", sorted(test), len(stems)


def _machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
             if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    return (f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs (shared with other work), torch {torch.__version__}, "
            f"pytorch-lightning {pl.__version__}, Python {platform.python_version()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA), help="the MoNuSeg training release folder")
    parser.add_argument("--models", nargs="+", help="default: every Table 1 model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--resize", type=int, default=128, help="every 512x512 patch downscaled to N x N")
    parser.add_argument("--patch-size", type=int, default=64, help="random training crops")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--test-fraction", type=float, default=0.2, help="tiles held out as the test set")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--runs", help="folder for the run folders (default: a temporary folder); reuse it to resume")
    parser.add_argument("--out", default=str(ROOT / "results" / "table1_cpu.md"))
    args = parser.parse_args(argv)

    data = Path(args.data)
    if not (data / "Tissue_Images").is_dir() or not (data / "Binary_masks").is_dir():
        print(f"skipped: MoNuSeg not found at {data} (Tissue_Images/ and Binary_masks/ are needed; "
              "the data is only on the development machine)")
        return 0
    torch.set_num_threads(args.threads)
    _show_training_log()
    logging.getLogger("nni_bixnas.training").setLevel(logging.WARNING)  # the table1 lines, not every epoch's
    links = Path(tempfile.mkdtemp(prefix="bixnas-table1-tiles-"))
    trainval, test, test_tiles, n_tiles = split_tiles(data, links, args.test_fraction, args.split_seed)
    runs = Path(args.runs or tempfile.mkdtemp(prefix="bixnas-table1-runs-"))
    start = time.perf_counter()
    report = run_table1(f"monuseg:{trainval}?masks=png", out_dir=runs, epochs=args.epochs, seeds=args.seeds,
                        models=args.models, test=f"monuseg:{test}?masks=png", batch_size=args.batch_size,
                        patch_size=args.patch_size, resize=args.resize, split_seed=args.split_seed,
                        accelerator="cpu", num_threads=args.threads)
    wall = time.perf_counter() - start

    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    table = format_table(report).replace("# Table 1: every model with one recipe", "## The table", 1)
    lines = [
        "# Table 1 on MoNuSeg at a CPU budget",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; wall time {wall / 60:.1f} min "
        f"({len(report['runs'])} runs, training and scoring)",
        f"- Machine: {_machine()}; `torch.set_num_threads({args.threads})` (and `num_threads={args.threads}` for "
        "every training and scoring)",
        f"- Data: the {n_tiles} MoNuSeg 2018 training tiles of `{data}`. The official test set is not available here: "
        f"{len(test_tiles)} tiles (seed {args.split_seed}) are the test set ({', '.join(test_tiles)}), the other "
        f"{n_tiles - len(test_tiles)} are split by tile into train and validation by `run_table1`. Each tile gives 4 "
        f"corner patches of 512x512, downscaled to {args.resize}x{args.resize}.",
        "- **No TNBC here** (it cannot be downloaded in this environment): the TNBC columns are empty. With the "
        "data, `bixnas table1 ... --tnbc tnbc:PATH` fills them.",
        f"- **A CPU budget, not the paper's**: {args.epochs} epochs (the paper: 300) on {args.patch_size} px crops "
        f"of {args.resize} px patches (the paper: 512 px). The figures are reported as they fall: a budget this "
        "short ranks how fast each network starts to learn, and says little about where each would end.",
        "",
        table,
    ]
    with atomic_write(args.out) as handle:
        handle.write("\n".join(lines))
    print(f"wrote {args.out} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
