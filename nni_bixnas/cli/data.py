"""``bixnas data inspect SCHEME:PATH``: what a dataset holds and what is wrong with it."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect datasets", description="Dataset tools.")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION")
    inspect = commands.add_parser(
        "inspect",
        help="count tiles and patches, measure the foreground fraction, list problems",
        description="Decode every item of a dataset and report tiles, patches, image size, channels, "
        "classes, the masks used (MoNuSeg: png or xml), foreground fraction and problems. "
        "Files with problems (unreadable, bad masks, NaN/inf pixels) are dropped and listed; without --strict "
        "the exit status is still 0.",
    )
    inspect.add_argument("spec", metavar="SCHEME:PATH",
                         help="e.g. monuseg:/data/MoNuSegTrainingData, monuseg:PATH?masks=xml or default")
    inspect.add_argument("--format", choices=("json", "text"), default="text", help="output format (default: text)")
    inspect.add_argument("--strict", action="store_true",
                         help="exit with status 2 if any file is dropped (default: list the problems, exit 0)")
    inspect.set_defaults(func=run_inspect)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_inspect(args: argparse.Namespace) -> int:
    from nni_bixnas.data import inspect_dataset

    report = inspect_dataset(args.spec)
    if args.format == "json":
        print(json.dumps(report))
    else:
        _print_report(report)
    if args.strict and report["dropped"]:
        more = len(report["problems"]) - 1
        raise ValueError(
            f"--strict: {report['dropped']} file(s) of {args.spec} dropped; first: {report['problems'][0]}"
            + (f" (and {more} more problem(s) in the report)" if more else "")
        )
    return 0


def _print_report(report: dict) -> None:
    fraction = report["foreground_fraction"]
    if isinstance(fraction, dict):
        fraction = ", ".join(f"{name} {value:.4f}" for name, value in fraction.items())
    else:
        fraction = f"{fraction:.4f}"
    size = "x".join(map(str, report["image_size"])) if report["image_size"] else "varies"
    print(f"dataset:             {report['name']} ({report['spec']})")
    print(f"tiles:               {report['tiles']}")
    print(f"patches:             {report['patches']}")
    print(f"image size (HxW):    {size}")
    if report.get("masks"):
        print(f"masks:               {report['masks']}")
    print(f"channels:            {report['channels']}")
    print(f"classes:             {report['classes']}")
    print(f"foreground fraction: {fraction}")
    print(f"dropped files:       {report['dropped']}")
    print(f"problems:            {len(report['problems'])}")
    for problem in report["problems"]:
        print(f"  - {problem}")
