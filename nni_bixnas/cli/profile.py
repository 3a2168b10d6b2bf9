"""``bixnas profile``: parameters and MACs of the registered models beside the paper's Table 1."""

from __future__ import annotations

import argparse
import json
from typing import List, Optional, Sequence

from ..models import create_model, list_models, paper_figures
from ..profile import count_complexity
from ..space.gene import Gene


def _agrees(ours: float, paper: float, scale: float) -> bool:
    """Within 0.5%, or equal at the paper's printed precision (2 decimals of M params / G MACs)."""
    return abs(ours / paper - 1) <= 0.005 or round(ours / scale, 2) == round(paper / scale, 2)


def profile_rows(
    models: Optional[Sequence[str]] = None,
    gene_file: Optional[str] = None,
    input_size: Sequence[int] = (512, 512),
    in_channels: int = 3,
) -> List[dict]:
    """One row per model: ``model, params, macs, paper_params, paper_macs`` and relative differences.

    ``paper_*`` are ``None`` where the paper gives no figure (a custom gene, or a non-paper input size).
    """
    rows = []
    targets = [(name, name, {}) for name in (models or ([] if gene_file else list_models())) ]
    if gene_file:
        targets.append((f"gene:{gene_file}", "bixnet", {"gene": Gene.load(gene_file)}))
    paper_setting = tuple(input_size) == (512, 512) and in_channels == 3
    for label, name, kwargs in targets:
        model = create_model(name, in_channels=in_channels, **kwargs)
        cx = count_complexity(model, input_size=input_size, in_channels=in_channels)
        paper = paper_figures(name) if paper_setting and not kwargs else None
        row = {"model": label, "params": cx.params, "macs": cx.macs,
               "paper_params": paper["params"] if paper else None, "paper_macs": paper["macs"] if paper else None}
        if paper:
            row["params_rel_diff"] = cx.params / paper["params"] - 1
            row["macs_rel_diff"] = cx.macs / paper["macs"] - 1
            row["agrees_with_paper"] = _agrees(cx.params, paper["params"], 1e6) and _agrees(cx.macs, paper["macs"], 1e9)
        rows.append(row)
    return rows


def format_table(rows: List[dict], input_size: Sequence[int], in_channels: int) -> str:
    """Markdown table of :func:`profile_rows`."""
    h, w = input_size
    lines = [
        f"Input 1x{in_channels}x{h}x{w}; MACs counted as ptflops does (each module call once).",
        "",
        "| model | params | paper params | diff | GMACs | paper GMACs | diff | agrees |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        if r["paper_params"] is None:
            lines.append(f"| {r['model']} | {r['params']:,} | – | – | {r['macs'] / 1e9:.3f} | – | – | – |")
        else:
            lines.append(
                f"| {r['model']} | {r['params']:,} | {r['paper_params'] / 1e6:.2f}M "
                f"| {100 * r['params_rel_diff']:+.2f}% "
                f"| {r['macs'] / 1e9:.3f} | {r['paper_macs'] / 1e9:.2f} | {100 * r['macs_rel_diff']:+.2f}% "
                f"| {'yes' if r['agrees_with_paper'] else 'no'} |"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    unknown = [m for m in args.model or [] if m not in list_models()]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; available: {', '.join(list_models())}")
    rows = profile_rows(args.model, args.gene, args.input_size, args.in_channels)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, args.input_size, args.in_channels))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "profile",
        help="parameters and MACs of the models, beside the paper's Table 1",
        description="Count parameters and MACs (ptflops conventions, batch 1) of registered models or a gene file.",
    )
    p.add_argument("--model", action="append", metavar="NAME",
                   help=f"model to count (repeatable; default: all of {', '.join(list_models())})")
    p.add_argument("--gene", metavar="FILE", help="count BiO-Net++ with this gene file (authors' text format)")
    p.add_argument("--input-size", nargs=2, type=_positive, default=(512, 512), metavar=("H", "W"),
                   help="input height and width (default 512 512)")
    p.add_argument("--in-channels", type=_positive, default=3, metavar="C", help="input channels (default 3)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    p.set_defaults(func=run)
