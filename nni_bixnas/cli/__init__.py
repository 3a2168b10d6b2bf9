"""The ``bixnas`` command line: one sub-command module per concern.

Each module listed in :data:`COMMANDS` defines ``add_parser(subparsers)``, which registers its
sub-command(s) and sets ``func`` on the parser; ``func(args)`` returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

COMMANDS = [
    "nni_bixnas.cli.data",
    "nni_bixnas.cli.profile",
    "nni_bixnas.cli.train",
    "nni_bixnas.cli.experiment",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bixnas",
        description="BiX-NAS for NNI 3.0: search, train, evaluate and profile segmentation networks.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(subparsers)
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
