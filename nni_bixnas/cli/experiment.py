"""``bixnas export``: the results of an nnictl experiment (final gene, its wiring, Pareto fronts, summary, and
the retrained net as a checkpoint and a self-contained ``torch.export`` program)."""

from __future__ import annotations

import argparse


def export_experiment(*args, **kwargs):
    """:func:`nni_bixnas.experiment.export.export_experiment`, imported on the first call (it loads NNI and
    torch, which ``bixnas export --help`` does not need)."""
    from ..experiment.export import export_experiment as export

    return export(*args, **kwargs)


def run_export(args: argparse.Namespace) -> int:
    from .train import _show_training_log

    _show_training_log()  # which gene was taken, when the search recorded none readable
    written = export_experiment(args.experiment_id, out_dir=args.out, experiment_dir=args.experiment_dir,
                                program=not args.no_program)
    for kind, path in written.items():
        print(f"{kind:16s} {path}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export an experiment's final gene, Pareto front and summary",
        description=(
            "Read an NNI experiment folder (db/nni.sqlite, the strategy's result.json and the strategy state the "
            "bridge saved) and write gene.txt (official text format, with a '# model: bixnet width=...' first line "
            "giving the model arguments of the search), gene.json (NNI sample, gene and model arguments), "
            "pareto.png (IoU vs MACs, one panel per stage), architecture.png/.svg (the wiring of the found net), "
            "summary.md, and, when a retrained checkpoint was reported, best.ckpt and model.pt2 (a torch.export "
            "program that loads with torch alone: torch.export.load('model.pt2').module()) with model.json. "
            "Only data is read (JSON, and checkpoints weights-only): nothing in the folder is unpickled or run."
        ),
    )
    p.add_argument("experiment_id", metavar="EXPERIMENT_ID",
                   help="the NNI experiment id (nnictl experiment list --all)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <experiment dir>/export)")
    p.add_argument("--experiment-dir", metavar="DIR",
                   help="the experiment folder, or the experimentWorkingDirectory holding it "
                        "(default: from ~/nni-experiments/.experiment)")
    p.add_argument("--no-program", action="store_true",
                   help="do not write model.pt2 (the torch.export program of the retrained net)")
    p.set_defaults(func=run_export)
