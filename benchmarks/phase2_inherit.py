"""Does Phase 2 do better when each stage inherits the previous stage's SuperNet weights?

The authors re-initialise the SuperNet at every stage (our default, ``inherit_weights=False``). This runs
Phase 1 once, then Phase 2 twice from the same candidates and seed — fresh weights vs inherited weights —
and retrains each final architecture with several seeds. It writes
``benchmarks/results/phase2_inherit.md``: per stage the members' shared-weight IoU (best and mean), the
final gene's MACs, and its retrained IoU (mean ± std over seeds).

Usage::

    python benchmarks/phase2_inherit.py                     # embedded synthetic data, CPU-sized
    python benchmarks/phase2_inherit.py --data monuseg:PATH --patch-size 128
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace

from nni_bixnas import create_model
from nni_bixnas.profile import count_complexity
from nni_bixnas.space import BiONetPlusPlus, Gene
from nni_bixnas.strategy import ProgressiveEvolution, SelectionMatrix
from nni_bixnas.training import make_evaluator, train_and_report
from nni_bixnas.utils import atomic_write

ROOT = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="default:n=32,size=96")
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--phase1-epochs", type=int, default=30)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--epochs", type=int, default=6, help="epochs per Phase 2 stage")
    p.add_argument("--retrain-epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="retraining seeds")
    p.add_argument("--seed", type=int, default=0, help="search seed (same for both variants)")
    p.add_argument("--out", default=str(ROOT / "results" / "phase2_inherit.md"))
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bixnas-inherit-"))
    training = {"data": args.data, "batch_size": 2, **({"patch_size": args.patch_size} if args.patch_size else {})}
    kwargs = {"width": args.width, "stem_width": args.width}

    def space():
        return RawFormatModelSpace.from_model(BiONetPlusPlus(**kwargs), make_evaluator(**training))

    started = time.perf_counter()
    phase1 = SelectionMatrix(epochs=args.phase1_epochs, seed=args.seed, out_dir=str(work / "phase1"))
    phase1(space(), SequentialExecutionEngine())
    rows = []
    for inherit in (False, True):
        t0 = time.perf_counter()
        phase2 = ProgressiveEvolution(candidates=phase1.candidates, samples=args.samples, epochs=args.epochs,
                                      inherit_weights=inherit, lr_per_member=False, keep_sequential_last=True,
                                      macs_input_size=(512, 512), seed=args.seed,
                                      out_dir=str(work / f"inherit_{inherit}"))
        phase2(space(), SequentialExecutionEngine())
        search_s = time.perf_counter() - t0
        gene = Gene.from_sample(phase2.final_samples[0])
        macs = count_complexity(create_model("bixnet", gene=gene, **kwargs)).macs
        ious = [train_and_report(create_model("bixnet", gene=gene, **kwargs), max_epochs=args.retrain_epochs, seed=s,
                                 out_dir=str(work / f"retrain_{inherit}_{s}"), **training)["default"]
                for s in args.seeds]
        stages = [(h.stage, max(m.iou for m in h.population), statistics.mean(m.iou for m in h.population))
                  for h in phase2.history if h.population]
        rows.append((inherit, stages, macs, ious, search_s))

    dense = count_complexity(create_model("bionet_pp", **kwargs)).macs
    lines = [
        "# Phase 2: fresh SuperNet per stage (authors) vs inherited weights",
        "",
        f"- command: `python benchmarks/phase2_inherit.py {shlex.join(argv if argv is not None else sys.argv[1:])}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; machine: {platform.platform()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; total {time.perf_counter() - started:.0f} s",
        f"- data `{args.data}`, BiO-Net++ width {args.width}; Phase 1 {args.phase1_epochs} epochs (shared); Phase 2: "
        f"{args.samples} samples x {args.epochs} epochs per stage, `lr_per_member=False`, `keep_sequential_last=True`, "
        f"seed {args.seed}; retraining {args.retrain_epochs} epochs, seeds {args.seeds}.",
        "",
        "| Phase 2 weights | stage: best / mean member IoU (shared weights) | search s | final GMACs @512² (SuperNet "
        f"{dense / 1e9:.3f}) | retrained IoU mean ± std |",
        "|---|---|---:|---:|---:|",
    ]
    for inherit, stages, macs, ious, search_s in rows:
        per_stage = ", ".join(f"{t}: {best:.3f} / {mean:.3f}" for t, best, mean in stages)
        std = statistics.stdev(ious) if len(ious) > 1 else 0.0
        lines.append(f"| {'inherited' if inherit else 'fresh (authors)'} | {per_stage} | {search_s:.0f} | "
                     f"{macs / 1e9:.3f} | {statistics.mean(ious):.4f} ± {std:.4f} |")
    lines += ["", "Shared-weight IoUs of different stages come from different SuperNets; compare rows, not columns.",
              ""]
    with atomic_write(args.out) as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
