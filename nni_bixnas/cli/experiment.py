"""``bixnas export``: the results of an nnictl experiment (final gene, Pareto front, summary)."""

from __future__ import annotations

import argparse

from ..experiment.export import export_experiment


def run_export(args: argparse.Namespace) -> int:
    written = export_experiment(args.experiment_id, out_dir=args.out, experiment_dir=args.experiment_dir)
    for kind, path in written.items():
        print(f"{kind:10s} {path}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export an experiment's final gene, Pareto front and summary",
        description=(
            "Read an NNI experiment folder (db/nni.sqlite, the strategy's result.json and the strategy state the "
            "bridge saved) and write gene.txt (official text format), gene.json (NNI sample), pareto.png (IoU vs "
            "MACs, every stage), summary.md and the retrained checkpoint when one was reported. Only data is read "
            "(JSON, and checkpoints weights-only): nothing in the folder is unpickled or run."
        ),
    )
    p.add_argument("experiment_id", metavar="EXPERIMENT_ID",
                   help="the NNI experiment id (nnictl experiment list --all)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <experiment dir>/export)")
    p.add_argument("--experiment-dir", metavar="DIR",
                   help="the experiment folder, or the experimentWorkingDirectory holding it "
                        "(default: from ~/nni-experiments/.experiment)")
    p.set_defaults(func=run_export)
