"""Finalist check: BiX-NAS's final nets trained standalone for a few epochs before the pick
(``BiXNAS(finalist_epochs=...)``), against RegularizedEvolution and RS-WS at the larger budget, on the searches
of a finished ``benchmarks/search_quality.py`` run.

Per search seed ``k`` of that run, its finished BiX-NAS search folder is copied and resumed with
``finalist_epochs`` (Phase 1 and Phase 2 are not run again): the check trains each of Phase 2's final nets
standalone with the search's training settings and picks by
:func:`~nni_bixnas.strategy.finalists.order_finalists`. Its wall seconds ``F_k`` (measured here) are added to
the search's ``B_k`` (measured by that run); NNI's ``RegularizedEvolution`` and random search with weight
sharing (RS-WS) then run again at ``B_k + F_k`` in this invocation, as search_quality runs them. Every pick
is retrained with the run's recipe, tiles and seeds and scored at the final epoch on the held-out test tiles
(units of search_quality's cache: a net already retrained there is not trained again). Beside them: the
run's own BiX-NAS pick (Phase 2's first, budget ``B_k``) and RE's at ``B_k``.

Run::

    python benchmarks/finalist_check.py --threads 2     # after search_quality.py ... --out ..._pruning.md

writes ``benchmarks/results/finalist_check.md`` and ``.json`` (machine, command, date) after every finished
unit; resumable. The timed units (checks, RE, RS-WS) run before every retraining. ``torch.set_num_threads
(--threads)`` is set explicitly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from nni.nas.execution import SequentialExecutionEngine

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_quality as sq  # noqa: E402  (its recipe, cache, arms, retraining and statistics)
from nni_bixnas.strategy import BiXNAS  # noqa: E402
from retrain_recipe import load_run, recipe_settings, results_parser, results_writer  # noqa: E402

DEFAULT_RESULTS = sq.ROOT / "benchmarks" / "results" / "search_quality_pruning.json"
DEFAULT_OUT = sq.ROOT / "benchmarks" / "results" / "finalist_check.md"
CHECKED, PHASE2, RE, RSWS, RE_BEFORE = ("BiX-NAS + finalist check", "BiX-NAS, Phase 2's pick",
                                        "RegularizedEvolution", "RS-WS", "RegularizedEvolution at B_k")
ARMS = [CHECKED, PHASE2, RE, RSWS, RE_BEFORE]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = results_parser(__doc__, DEFAULT_RESULTS, DEFAULT_OUT)
    p.add_argument("--epochs", type=int, default=None,
                   help="finalist_epochs (default: the run's RegularizedEvolution trial epochs, re_epochs)")
    p.add_argument("--tolerance", type=float, default=0.05, help="finalist_tolerance (default 0.05)")
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs must be a positive int, got {args.epochs}")
    if args.tolerance < 0:
        p.error(f"--tolerance must be >= 0, got {args.tolerance}")
    return args


def check(s, units: sq.Units, k: int, epochs: int, tolerance: float) -> Dict[str, Any]:
    """Search seed ``k``'s finished BiX-NAS search, copied and resumed with the finalist check, timed."""
    source = sq.search_dir(s, k)
    if not (source / "bixnas_state.pt").is_file():
        raise SystemExit(f"finalist_check: {source / 'bixnas_state.pt'} does not exist; the run's BiX-NAS search "
                         f"of seed {k} must be finished (rerun its search_quality command)")
    key = f"finalists-{source.name}-{sq.digest(epochs, tolerance)}"

    def run() -> Dict[str, Any]:
        out = s.work / key
        shutil.rmtree(out, ignore_errors=True)  # not resumable: an interrupted check starts again
        shutil.copytree(source, out, ignore=shutil.ignore_patterns("finalists", "result.json"))
        strategy = BiXNAS(phase1={"epochs": s.phase1_epochs}, phase2=sq.phase2_kwargs(s), retrain=None,
                          training=sq.training(s), out_dir=str(out), seed=k, finalist_epochs=epochs,
                          finalist_tolerance=tolerance)
        started = time.perf_counter()
        strategy(sq.bixnas_space(s), SequentialExecutionEngine())
        wall = time.perf_counter() - started
        result = json.loads((out / "result.json").read_text())
        finalists = result["finalists"]
        return {"wall_s": wall, "gene": result["genes"][0], "order": finalists["order"],
                "ious": [r.get("default") for r in finalists["results"]],
                "final_ious": [r.get("final_iou") for r in finalists["results"]]}
    return units.run(key, f"finalist check, search seed {k} ({epochs} epochs)", run)


def run_all(run: Dict[str, Any], units: sq.Units, state: Dict[str, Any], write, epochs: int, tolerance: float) -> None:
    s = recipe_settings(run, "ce")
    seeds = sorted(run["state"]["seeds"].items(), key=lambda item: int(item[0]))
    for key, entry in seeds:  # the timed units first, then the retrainings
        k, search = int(key), entry["search"]
        finalists = check(s, units, k, epochs, tolerance)
        budget = float(search["budget_s"]) + float(finalists["wall_s"])
        evolution = units.run(f"re-{sq.digest(sq.recipe(s), s.re_epochs, budget, k)}",
                              f"RegularizedEvolution seed {k} ({budget:.0f} s budget)",
                              lambda: sq.run_re(s, units, budget, k))
        shared = units.run(f"rsws-{sq.digest(search['gene'], budget, s.rsws_max, k)}",
                           f"RS-WS seed {k} ({budget:.0f} s budget)",
                           lambda: sq.rs_ws(s, units, {**search, "budget_s": budget}))
        old = entry["picks"]
        state["seeds"][key] = {"budget_s": float(search["budget_s"]), "finalist_s": finalists["wall_s"],
                               "finalists": finalists, "picks": {
                                   CHECKED: {"gene": finalists["gene"]}, PHASE2: {"gene": old["BiX-NAS"]["gene"]},
                                   RE: {"gene": evolution["gene"], "trials": evolution["trials"]},
                                   RSWS: {"gene": shared["gene"], "scored": shared["scored"]},
                                   RE_BEFORE: {"gene": old["RegularizedEvolution"]["gene"]}}}
        write(state)
    for key, _ in seeds:
        for name, pick in state["seeds"][key]["picks"].items():
            spec = sq.gene_spec(s, pick["gene"])
            pick["macs48"], pick["runs"] = sq.macs48(units, spec), sq.retrain_all(units, s, spec)
            write(state)


def summarise(state: Dict[str, Any]) -> Dict[str, Any]:
    ref_macs, arms = state["ref_macs"], {}
    for name in ARMS:
        picks = {k: v["picks"][name] for k, v in state["seeds"].items() if v["picks"].get(name, {}).get("runs")}
        test = {k: sq.mean([r["test_iou"] for r in p["runs"]]) for k, p in picks.items()}
        ratio = {k: p["macs48"] / ref_macs for k, p in picks.items()}
        arms[name] = {"seed_test_iou": test, "macs_ratio": ratio,
                      "collapsed": sum(r["val_iou"] < sq.COLLAPSED for p in picks.values() for r in p["runs"]),
                      "hypervolume": sq.hypervolume([(test[k], ratio[k]) for k in test]) if test else None}
    checked = arms[CHECKED]["seed_test_iou"]
    for name in ARMS[1:]:
        keys = sorted(set(checked) & set(arms[name]["seed_test_iou"]))
        other = arms[name]["seed_test_iou"]
        arms[name]["p_vs_checked"] = sq.paired_p([checked[k] for k in keys], [other[k] for k in keys])
    values = {name: sq.mean(list(arms[name]["seed_test_iou"].values())) for name in ARMS}
    ratio = sq.mean(list(arms[CHECKED]["macs_ratio"].values()))
    targets = {
        "BiX-NAS + finalist check mean test IoU >= RegularizedEvolution's (same budget)":
            None if None in (values[CHECKED], values[RE]) else values[CHECKED] >= values[RE],
        "its mean MACs <= 85% of BiO-Net++'s": None if ratio is None else ratio <= 0.85,
        "its mean test IoU > RS-WS's (same budget)":
            None if None in (values[CHECKED], values[RSWS]) else values[CHECKED] > values[RSWS],
    }
    changed = sum(v["finalists"]["order"][0] != 0 for v in state["seeds"].values())
    return {"arms": arms, "values": values, "targets": targets, "changed": changed}


def word(flag: Optional[bool]) -> str:
    return "pending" if flag is None else ("yes" if flag else "no")


def seed_table(state: Dict[str, Any]) -> List[str]:
    """Per search seed: the budgets, the finalists' standalone IoUs, the winner's Phase 2 rank, every arm's pick
    (test IoU / MACs over BiO-Net++'s)."""
    lines = ["| search seed | B_k s | F_k s | finalists' standalone IoU (Phase 2 order) | winner | "
             + " | ".join(ARMS) + " |", "|---:|---:|---:|---|---:|" + "---|" * len(ARMS)]
    for key, seed in sorted(state["seeds"].items(), key=lambda item: int(item[0])):
        cells = []
        for name in ARMS:
            pick = seed["picks"][name]
            cells.append(f"{sq.num(sq.mean([r['test_iou'] for r in pick['runs']]))} / "
                         f"{sq.num(pick['macs48'] / state['ref_macs'], 3)}" if pick.get("runs") else "pending")
        ious = ", ".join(sq.num(v) for v in seed["finalists"]["ious"])
        lines.append(f"| {key} | {seed['budget_s']:.0f} | {seed['finalist_s']:.0f} | {ious} | "
                     f"{seed['finalists']['order'][0] + 1} | " + " | ".join(cells) + " |")
    return lines


def arm_table(summary: Dict[str, Any]) -> List[str]:
    """Per arm over the search seeds: test IoU, MACs ratio, hypervolume, collapsed retrainings, paired p."""
    lines = ["| arm | test IoU | MACs / BiO-Net++ | hypervolume | collapsed retrainings | p vs the checked pick |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in ARMS:
        arm = summary["arms"][name]
        lines.append(f"| {name} | {sq.mean_std(list(arm['seed_test_iou'].values()))} | "
                     f"{sq.num(sq.mean(list(arm['macs_ratio'].values())), 3)} | {sq.num(arm['hypervolume'])} | "
                     f"{arm['collapsed']} | {sq.num(arm.get('p_vs_checked'), 3) if name != CHECKED else '—'} |")
    return lines


def verdict(state: Dict[str, Any], summary: Dict[str, Any]) -> List[str]:
    return [f"The check changed the pick on {summary['changed']} of {len(state['seeds'])} search seeds.", "",
            "Targets: " + "; ".join(f"{k}: {word(v)}" for k, v in summary["targets"].items()) + "."]


def render(state: Dict[str, Any], summary: Dict[str, Any], meta: Dict[str, Any]) -> str:
    lines = ["# Finalist check: Phase 2's final nets trained standalone before the pick", "",
             f"- command: `{meta['command']}`", sq.date_line(meta), f"- machine: {sq.machine()}",
             f"- searches: the BiX-NAS searches of `{meta['results']}`, resumed with `finalist_epochs="
             f"{meta['epochs']}`, `finalist_tolerance={meta['tolerance']}`; RegularizedEvolution and RS-WS run "
             "again at B_k + F_k (the search's wall seconds, from that run, plus the check's, from this one)",
             "- every pick retrained with that run's recipe, tiles and seeds; test IoU at the final epoch, mean over "
             "the retrainings; MACs at width 48, 512 x 512, over BiO-Net++'s",
             f"- complete: {'yes' if meta['complete'] else 'no (a rerun continues)'}", "", *seed_table(state), "",
             "Cells: test IoU / MACs over BiO-Net++'s. Over the search seeds:", "", *arm_table(summary), "",
             *verdict(state, summary)]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sq.quiet(False)
    results, out = Path(args.results), Path(args.out)
    run = load_run(results, "finalist_check")
    epochs = args.epochs or int(run["settings"]["re_epochs"])
    meta = {**sq.run_meta("finalist_check.py", sys.argv[1:] if argv is None else argv, out.with_suffix(".json"),
                        args.report_only), "results": str(results), "threads": args.threads,
            "epochs": epochs, "tolerance": args.tolerance}

    write = results_writer(out, meta, summarise, render)
    units = sq.Units(Path(run["settings"]["work"]), lambda: None, read_only=args.report_only)
    state: Dict[str, Any] = {"seeds": {}, "ref_macs": run["state"]["ref_macs"]}
    return sq.run_units(lambda: run_all(run, units, state, write, epochs, args.tolerance), units, state, write,
                        meta, out)


if __name__ == "__main__":
    sys.exit(main())
