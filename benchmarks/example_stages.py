"""Does every Phase 2 stage of an experiment compare distinct nets? Per stage, from the strategy's results.

Reads ``<experiment dir>/strategy/result.json`` (JSON only) of a finished BiX-NAS experiment, e.g. the
default ``nnictl create --config examples/bixnas.yml``, and writes per stage: members, distinct
effective nets (by the live blocks' choices), distinct (IoU, MACs) points, IoU range, front size and kept
parents, plus the retrained IoUs, to ``benchmarks/results/bixnas_yml_stages.md``.

Usage::

    python benchmarks/example_stages.py ~/nni-experiments/<ID> --command "nnictl create --config examples/bixnas.yml"
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
from pathlib import Path

from nni_bixnas.space import BiONetPlusPlus
from nni_bixnas.utils import atomic_write

ROOT = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment_dir", type=Path, help="the experiment folder (holds strategy/result.json)")
    p.add_argument("--command", default="nnictl create --config examples/bixnas.yml", help="how the experiment was run")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bixnas_yml_stages.md")
    args = p.parse_args(argv)
    result_path = args.experiment_dir / "strategy" / "result.json"
    result = json.loads(result_path.read_text())
    space = BiONetPlusPlus(width=4, stem_width=4)  # only its wiring is used (effective nets)
    lines = [
        "# Phase 2 stages of one experiment: distinct members",
        "",
        f"- Experiment: `{args.command}` ({args.experiment_dir.name}); read from `strategy/result.json`.",
        f"- Written by `python benchmarks/example_stages.py` on {datetime.date.today().isoformat()}, "
        f"{platform.node()} ({platform.machine()}, Python {platform.python_version()}).",
        "",
        "| stage | members | distinct nets | distinct (IoU, MACs) | IoU min-max (shared weights) | front | kept |",
        "|---:|---:|---:|---:|---|---:|---:|",
    ]
    for h in result["phase2_history"]:
        population = h["population"]
        nets = {json.dumps(space.effective_sample(p["sample"]), sort_keys=True) for p in population}
        points = {(p["iou"], p["macs"]) for p in population}
        ious = [p["iou"] for p in population]
        span = f"{min(ious):.4f}-{max(ious):.4f}" if ious else "-"
        lines.append(f"| {h['stage']} | {len(population)} | {len(nets)} | {len(points)} | {span} | {len(h['front'])} | "
                     f"{len(h['kept'])} |")
    retrained = [r["default"] for r in result.get("retrained", [])]
    if retrained:
        spread = statistics.stdev(retrained) if len(retrained) > 1 else 0.0
        lines += ["", f"Retrained winner, val IoU over {len(retrained)} seeds: "
                      f"{statistics.mean(retrained):.4f} ± {spread:.4f} "
                      f"({', '.join(f'{v:.4f}' for v in retrained)}). "
                      "Data: the experiment's evaluator (embedded synthetic "
                      "tiles for `bixnas.yml`)."]
    with atomic_write(args.out) as handle:
        handle.write("\n".join(lines) + "\n")
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
