"""Retraining recipe: the authors' cross-entropy (``loss='ce'``) against cross-entropy plus soft Dice
(``loss='dice_ce'``), on the nets of a finished ``benchmarks/search_quality.py`` run.

Every pick of every arm and search seed (BiX-NAS, RegularizedEvolution, RS-WS) and the two reference nets
(BiO-Net++, the published BiX-Net) are retrained with the search_quality run's own recipe, tiles and
retraining seeds, once per loss, and scored as there: the final epoch's checkpoint on the validation and the
held-out test tiles. The ``'ce'`` retrainings are that run's own units (read from its cache, not trained
again). Reported per loss: how many retrainings end nearly all background (final-epoch validation IoU below
``search_quality.COLLAPSED``), each arm's test IoU (mean over search seeds of the mean over retraining
seeds), and BiX-NAS against RegularizedEvolution (paired by search seed).

Run::

    python benchmarks/retrain_recipe.py --threads 1        # after benchmarks/search_quality.py

writes ``benchmarks/results/retrain_recipe.md`` and ``.json`` (machine, command, date), after every finished
unit; resumable (each retraining is a unit of search_quality's cache). ``torch.set_num_threads(--threads)``
is set explicitly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_quality as sq  # noqa: E402  (its recipe, cache, retraining and statistics)
from nni_bixnas.utils import atomic_write  # noqa: E402

LOSSES = ("ce", "dice_ce")
ARMS = list(sq.SEARCHING)
DEFAULT_RESULTS = sq.DEFAULT_OUT.with_suffix(".json")
DEFAULT_OUT = sq.ROOT / "benchmarks" / "results" / "retrain_recipe.md"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return results_parser(__doc__, DEFAULT_RESULTS, DEFAULT_OUT).parse_args(argv)


def results_parser(doc: str, results: Path, out: Path) -> argparse.ArgumentParser:
    """The options of a benchmark on a finished search_quality run: ``--results``, ``--out``, ``--threads``,
    ``--report-only``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--results", default=str(results),
                   help=f"search_quality's JSON results (default {results}); its settings name the work folder")
    p.add_argument("--out", default=str(out), help=f"markdown result; the .json beside it (default {out})")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--report-only", action="store_true", help="train nothing: report the finished units")
    return p


def load_run(path: Path, who: str = "retrain_recipe") -> Dict[str, Any]:
    """search_quality's results, checked to hold what this benchmark (``who``) reads; one line naming the file
    if not."""
    if not path.is_file():
        raise SystemExit(f"{who}: {path} does not exist; run benchmarks/search_quality.py first")
    try:
        run = json.loads(path.read_text())
    except ValueError as err:
        raise SystemExit(f"{who}: {path} is not valid JSON ({err})") from None
    if not isinstance(run, dict) or not all(k in run for k in ("settings", "state")) \
            or "seeds" not in run["state"] or "references" not in run["state"]:
        raise SystemExit(f"{who}: {path} holds no finished search_quality run (expected 'settings' and "
                         "'state' with 'seeds' and 'references')")
    return run


def recipe_settings(run: Dict[str, Any], loss: str) -> argparse.Namespace:
    """search_quality's settings of ``run`` with ``loss``: what its ``retrain`` reads."""
    s = argparse.Namespace(**run["settings"])
    s.work, s.out, s.loss = Path(s.work), Path(s.out), loss
    return s


def nets(run: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every arm's pick per search seed and the references: ``{'arm', 'search_seed', 'spec', 'macs_ratio'}``."""
    state, out = run["state"], []
    for seed, entry in sorted(state["seeds"].items(), key=lambda item: int(item[0])):
        for arm in ARMS:
            pick = entry.get("picks", {}).get(arm)
            if pick and pick.get("runs"):
                out.append({"arm": arm, "search_seed": int(seed), "spec": pick["runs"][0]["spec"],
                            "macs_ratio": pick["macs48"] / state["ref_macs"] if pick.get("macs48") else None})
    for name, ref in state["references"].items():
        out.append({"arm": name, "search_seed": None, "spec": ref["runs"][0]["spec"],
                    "macs_ratio": ref["macs48"] / state["ref_macs"] if ref.get("macs48") else None})
    return out


def run_all(run: Dict[str, Any], units: sq.Units, state: Dict[str, Any], write) -> None:
    """Retrain every net of ``state`` per loss and retraining seed, into ``state['runs']``."""
    seeds = range(int(run["settings"]["retrain_seeds"]))
    for loss in LOSSES:  # the authors' loss first: its units are search_quality's, cached
        s = recipe_settings(run, loss)
        for index, net in enumerate(state["nets"]):
            for seed in seeds:
                result = sq.retrain(units, s, net["spec"], seed)
                state["runs"][loss].append({"net": index, "seed": seed, "val_iou": result["val_iou"],
                                            "test_iou": result["test_iou"], "best_val_iou": result["best_val_iou"],
                                            "best_epoch": result["best_epoch"]})
                write(state)


def summarise(state: Dict[str, Any]) -> Dict[str, Any]:
    """Per loss: collapsed retrainings, per arm the test/validation IoU and MACs, BiX-NAS vs RE."""
    summary: Dict[str, Any] = {}
    for loss, runs in state["runs"].items():
        by_net: Dict[int, List[Dict[str, Any]]] = {}
        for r in runs:
            by_net.setdefault(r["net"], []).append(r)
        arms: Dict[str, Dict[str, Any]] = {}
        for index, net_runs in sorted(by_net.items()):
            net = state["nets"][index]
            arm = arms.setdefault(net["arm"], {"test": {}, "val": {}, "macs_ratio": []})
            key = str(net["search_seed"])
            arm["test"][key] = sq.mean([r["test_iou"] for r in net_runs])
            arm["val"][key] = sq.mean([r["val_iou"] for r in net_runs])
            arm["macs_ratio"].append(net["macs_ratio"])
        bix, evo = arms.get("BiX-NAS", {}).get("test", {}), arms.get("RegularizedEvolution", {}).get("test", {})
        common = sorted(set(bix) & set(evo))
        summary[loss] = {
            "retrainings": len(runs),
            "collapsed": sum(r["val_iou"] < sq.COLLAPSED for r in runs),
            "arms": arms,
            "p_bixnas_vs_re": sq.paired_p([bix[k] for k in common], [evo[k] for k in common]),
        }
    return summary


def arm_ious(state: Dict[str, Any], row: Dict[str, Any], loss: str, name: str, split: str) -> List[float]:
    """The ``split`` (``'test'`` or ``'val'``) IoUs behind an arm's cell: a searching arm's per-search-seed means
    (``summarise``'s ``row``), a reference's retrainings of its one net."""
    if name in ARMS:
        return list(row["arms"][name][split].values())
    index = next(i for i, n in enumerate(state["nets"]) if n["arm"] == name)
    return [r[f"{split}_iou"] for r in state["runs"][loss] if r["net"] == index]


def render(state: Dict[str, Any], summary: Dict[str, Any], meta: Dict[str, Any]) -> str:
    lines = ["# Retraining recipe: cross-entropy against cross-entropy + soft Dice", "",
             f"- command: `{meta['command']}`", sq.date_line(meta), f"- machine: {sq.machine()}",
             f"- nets: the picks and references of `{meta['results']}` (its tiles, recipe and retraining seeds); "
             "scored at the final epoch on validation and on the held-out test tiles",
             f"- collapsed: a final-epoch validation IoU below {sq.COLLAPSED} (nearly all background)",
             f"- complete: {'yes' if meta['complete'] else 'no (a rerun continues)'}", "",
             "| loss | retrainings | collapsed | BiX-NAS vs RE, paired p |", "|---|---:|---:|---:|"]
    for loss, row in summary.items():
        lines.append(f"| {loss} | {row['retrainings']} | {row['collapsed']} | {sq.num(row['p_bixnas_vs_re'], 3)} |")
    lines += ["", "Test IoU (validation IoU) of each arm's nets, mean ± std over search seeds (references: over "
              "retraining seeds of one net), with the MACs of the nets as a share of BiO-Net++'s:", "",
              "| arm | MACs / BiO-Net++ | " + " | ".join(f"{loss}: test (val)" for loss in summary) + " |",
              "|---|---:|" + "---:|" * len(summary)]
    names = list(dict.fromkeys(net["arm"] for net in state["nets"]))
    for name in names:
        cells = []
        for loss, row in summary.items():
            if name not in row["arms"]:
                cells.append("pending")
                continue
            test, val = (arm_ious(state, row, loss, name, key) for key in ("test", "val"))
            cells.append(f"{sq.mean_std(test)} ({sq.mean_std(val)})")
        ratios = [n["macs_ratio"] for n in state["nets"] if n["arm"] == name and n["macs_ratio"] is not None]
        lines.append(f"| {name} | {sq.num(sq.mean(ratios), 3)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_writer(out: Path, meta: Dict[str, Any], summarise: Callable, render: Callable) -> Callable:
    """``write(state)``: ``out`` (``render(state, summarise(state), meta)``) and its .json, atomically."""
    def write(state: Dict[str, Any]) -> None:
        summary = summarise(state)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out) as handle:
            handle.write(render(state, summary, meta))
        with atomic_write(out.with_suffix(".json")) as handle:
            json.dump({**meta, "summary": summary, "state": state}, handle, indent=1, default=sq.plain)
    return write


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sq.quiet(False)
    results, out = Path(args.results), Path(args.out)
    run = load_run(results)
    meta = {**sq.run_meta("retrain_recipe.py", sys.argv[1:] if argv is None else argv, out.with_suffix(".json"),
                        args.report_only), "results": str(results), "threads": args.threads}

    write = results_writer(out, meta, summarise, render)
    units = sq.Units(Path(run["settings"]["work"]), lambda: None, read_only=args.report_only)
    state: Dict[str, Any] = {"nets": nets(run), "runs": {loss: [] for loss in LOSSES}}
    return sq.run_units(lambda: run_all(run, units, state, write), units, state, write, meta, out)


if __name__ == "__main__":
    sys.exit(main())
