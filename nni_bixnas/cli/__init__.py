"""The ``bixnas`` command line: one sub-command module per concern.

Each module listed in :data:`COMMANDS` defines ``add_parser(subparsers)``, which registers its
sub-command(s) and sets ``func`` on the parser; ``func(args)`` returns the exit status.

A module is imported only when one of its sub-commands is chosen: ``bixnas --help``, and the help and
argument errors of a sub-command whose module imports nothing heavy at module level, answer without
loading torch or NNI (seconds on a busy machine). The top-level listing shows :data:`COMMANDS`' help lines.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, List, Optional, Tuple

# module -> its sub-commands and their one-line help, in the order `bixnas --help` lists them
COMMANDS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "nni_bixnas.cli.data": (("data", "inspect datasets; write a sample tile (and its mask)"),),
    "nni_bixnas.cli.profile": (("profile", "parameters and MACs of the models, beside the paper's Table 1"),),
    "nni_bixnas.cli.train": (
        ("train", "retrain a network (best-val-IoU and last checkpoints, resumable)"),
        ("evaluate", "IoU/Dice of a checkpoint on a dataset, per image and in all"),
        ("predict", "write masks, overlays and contours (and IoU/Dice with --gt) for images"),
        ("compare", "mean ± std of runs per model; paired t-test between two groups"),
    ),
    "nni_bixnas.cli.table1": (
        ("table1", "the paper's Table 1: every model, one recipe and seeds, test set and TNBC, t-tests"),
    ),
    "nni_bixnas.cli.cv": (("cv", "k-fold cross-validation by patient on CHAOS MR, per-organ IoU/Dice (Table 2)"),),
    "nni_bixnas.cli.experiment": (("export", "export an experiment's final gene, Pareto front and summary"),),
}


class _LazySubParsers(argparse._SubParsersAction):
    """Sub-commands registered as placeholders; the chosen one's module is imported when it is parsed."""

    def __call__(self, parser, namespace, values, option_string=None):
        module = next((m for m, commands in COMMANDS.items() if values[0] in dict(commands)), None)
        if module is not None:
            load_module(self, module)
        super().__call__(parser, namespace, values, option_string)


def load_module(subparsers: argparse._SubParsersAction, module: str) -> None:
    """Replace the placeholders of ``module``'s sub-commands by the parsers its ``add_parser`` registers."""
    names = {name for name, _ in COMMANDS[module]}
    if all(getattr(subparsers.choices.get(name), "_bixnas_loaded", False) for name in names):
        return
    for name in names:
        subparsers._name_parser_map.pop(name, None)
    subparsers._choices_actions[:] = [a for a in subparsers._choices_actions if a.dest not in names]
    importlib.import_module(module).add_parser(subparsers)
    for name in names:
        subparsers.choices[name]._bixnas_loaded = True


def build_parser(lazy: bool = True) -> argparse.ArgumentParser:
    """The ``bixnas`` parser.

    Parameters
    ----------
    lazy : bool
        Import a sub-command's module only when the sub-command is parsed (the default); ``False``
        imports every module now (the full parser, e.g. to generate documentation).
    """
    parser = argparse.ArgumentParser(
        prog="bixnas",
        description="BiX-NAS for NNI 3.0: search, train, evaluate and profile segmentation networks.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", action=_LazySubParsers)
    for module, commands in COMMANDS.items():
        for name, help_text in commands:
            subparsers.add_parser(name, help=help_text, add_help=False)
        if not lazy:
            load_module(subparsers, module)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:
        # Bad input or a folder/disk that refuses: one clear line, no traceback (an OSError names its file).
        print(f"bixnas {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
