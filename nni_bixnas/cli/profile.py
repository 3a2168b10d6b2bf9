"""``bixnas profile``: parameters and MACs of the registered models beside the paper's Table 1, or of a gene.

A gene file written by ``bixnas export`` starts with ``# model: bixnet width=... stem_width=...``, the
model arguments of the search (:mod:`nni_bixnas.space.gene_header`): ``profile --gene`` builds the net with
them, so it reports what the export's ``summary.md`` says; ``--model-arg key=value`` overrides them.
``--plot`` draws the gene's wiring (:mod:`nni_bixnas.space.wiring_plot`).

torch and NNI are imported when the command runs, not at import (``bixnas profile --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, List, Mapping, Optional, Sequence

from .train import _parse_model_args


def _agrees(ours: float, paper: float, scale: float) -> bool:
    """Within 2% (the bound we hold the baselines to), or equal at the paper's printed precision (2 decimals of
    M params / G MACs)."""
    return abs(ours / paper - 1) <= 0.02 or round(ours / scale, 2) == round(paper / scale, 2)


def profile_rows(
    models: Optional[Sequence[str]] = None,
    gene_file: Optional[str] = None,
    input_size: Sequence[int] = (512, 512),
    in_channels: Optional[int] = None,
    model_args: Optional[Mapping[str, Any]] = None,
) -> List[dict]:
    """One row per model: ``model, params, macs, paper_params, paper_macs`` and relative differences.

    ``model_args`` go to every model (for a gene, over the file's header). ``in_channels`` defaults to the
    gene header's, else 3. ``paper_*`` are ``None`` where the paper gives no figure (a custom gene or model
    arguments, or a non-paper input size).
    """
    from ..models import create_model, list_models, paper_figures
    from ..profile import count_complexity

    overrides = dict(model_args or {})
    targets = [(name, name, dict(overrides)) for name in (models or ([] if gene_file else list_models()))]
    if gene_file:
        from ..space.gene_header import load_gene_file

        gene, args = load_gene_file(gene_file, overrides)
        targets.append((f"gene:{gene_file}", "bixnet", {**args, "gene": gene}))
    rows = []
    for label, name, kwargs in targets:
        channels = in_channels or kwargs.pop("in_channels", None) or 3
        kwargs.pop("in_channels", None)
        model = create_model(name, in_channels=channels, **kwargs)
        cx = count_complexity(model, input_size=input_size, in_channels=channels)
        paper_setting = tuple(input_size) == (512, 512) and channels == 3 and not kwargs
        paper = paper_figures(name) if paper_setting else None
        row = {"model": label, "params": cx.params, "macs": cx.macs, "in_channels": channels,
               "paper_params": paper["params"] if paper else None, "paper_macs": paper["macs"] if paper else None}
        if "gene" in kwargs:
            row["model_args"] = {k: v for k, v in kwargs.items() if k != "gene"}
        if paper:
            row["params_rel_diff"] = cx.params / paper["params"] - 1
            row["macs_rel_diff"] = cx.macs / paper["macs"] - 1
            row["agrees_with_paper"] = _agrees(cx.params, paper["params"], 1e6) and _agrees(cx.macs, paper["macs"], 1e9)
        rows.append(row)
    return rows


def format_table(rows: List[dict], input_size: Sequence[int], in_channels: Optional[int] = None) -> str:
    """Markdown table of :func:`profile_rows`."""
    h, w = input_size
    channels = sorted({r.get("in_channels", in_channels or 3) for r in rows}) or [in_channels or 3]
    lines = [
        f"Input 1x{'/'.join(map(str, channels))}x{h}x{w}; MACs counted as ptflops does (each module call once).",
    ]
    lines += [f"{r['model']}: {_args_text(r['model_args'])}" for r in rows if r.get("model_args")]
    lines += [
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


def _args_text(args: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in args.items()) or "default model arguments"


def plot_gene(gene_file: str, path: str, model_args: Optional[Mapping[str, Any]] = None,
              row: Optional[dict] = None) -> str:
    """Draw the wiring of ``gene_file`` to ``path`` (``.png`` or ``.svg``); return the path written."""
    from ..space.gene_header import load_gene_file
    from ..space.wiring_plot import write_architecture

    gene, _ = load_gene_file(gene_file, model_args)
    subtitle = ""
    if row is not None:
        subtitle = f"{row['params']:,} params, {row['macs'] / 1e9:.3f} GMACs ({_args_text(row.get('model_args', {}))})"
    return str(write_architecture(gene, path, title=f"BiO-Net++ wiring of {gene_file}", subtitle=subtitle))


def run(args: argparse.Namespace) -> int:
    from ..models import list_models

    unknown = [m for m in args.model or [] if m not in list_models()]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; available: {', '.join(list_models())}")
    if args.plot and not args.gene:
        raise ValueError("--plot draws a gene's wiring; give the gene file with --gene")
    if args.plot and not args.plot.lower().endswith((".png", ".svg")):
        raise ValueError(f"--plot {args.plot}: expected a .png or .svg file name")
    overrides = _parse_model_args(args.model_arg)
    rows = profile_rows(args.model, args.gene, args.input_size, args.in_channels, overrides)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, args.input_size, args.in_channels))
    if args.plot:
        written = plot_gene(args.gene, args.plot, overrides, rows[-1])
        if args.format != "json":
            print(f"\nwiring of {args.gene}: {written}")
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
        description=(
            "Count parameters and MACs (ptflops conventions, batch 1) of registered models or a gene file. A gene "
            "file from `bixnas export` starts with '# model: bixnet width=... stem_width=...' (the model "
            "arguments of the search): the net is built with them, so the counts match the export's summary.md."
        ),
    )
    p.add_argument("--model", action="append", metavar="NAME",
                   help="model to count (repeatable; default: every registered model)")
    p.add_argument("--gene", metavar="FILE",
                   help="count BiO-Net++ with this gene file (authors' text format), at the model arguments of "
                        "its '# model:' header line")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="model constructor argument, over a gene header's (repeatable; JSON values), "
                        "e.g. --model-arg width=8")
    p.add_argument("--input-size", nargs=2, type=_positive, default=(512, 512), metavar=("H", "W"),
                   help="input height and width (default 512 512)")
    p.add_argument("--in-channels", type=_positive, default=None, metavar="C",
                   help="input channels (default: the gene header's, else 3)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    p.add_argument("--plot", metavar="PATH",
                   help="with --gene: draw the net's wiring (blocks by iteration and level, kept skips as arrows, "
                        "skipped blocks grey) to PATH (.png or .svg)")
    p.set_defaults(func=run)
