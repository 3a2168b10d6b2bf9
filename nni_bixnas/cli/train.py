"""``bixnas train | evaluate | predict | compare``: retrain a network, score it, segment images, compare runs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

# ---------------------------------------------------------------------------------------------------
# helpers


def _parse_model_args(pairs: Sequence[str]) -> Dict[str, Any]:
    """``['width=8', 'iterations=2']`` -> ``{'width': 8, 'iterations': 2}`` (JSON values, else strings)."""
    kwargs: Dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model-arg expects key=value, got {pair!r}")
        try:
            kwargs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key.strip()] = value
    return kwargs


def _parse_devices(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        return [int(d) for d in text.split(",")] if "," in text else text


class _LogFormatter(logging.Formatter):
    """``[HH:MM:SS] message``, with ``warning:`` before warnings and errors."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        if record.levelno >= logging.WARNING:
            time, _, message = text.partition("] ")
            text = f"{time}] {record.levelname.lower()}: {message}"
        return text


class _StderrHandler(logging.StreamHandler):
    """A handler writing to the ``sys.stderr`` of the moment (a redirection, or a test's capture, included)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_training_log() -> None:
    logger = logging.getLogger("nni_bixnas")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(_LogFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _add_num_threads(parser, progress: bool = False) -> None:
    """``--num-threads`` (and with ``progress`` the ``--no-progress`` of evaluate and predict)."""
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--num-threads", type=_positive, metavar="N",
                        help="torch CPU threads (default: torch's, one per core); on a machine other work shares "
                             "1 is often much faster")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------------
# train


def run_train(args: argparse.Namespace) -> int:
    from nni_bixnas.models import list_models
    from nni_bixnas.settings import TrainingSettings
    from nni_bixnas.training import fit

    if args.model not in list_models():
        raise ValueError(f"unknown model {args.model!r}; available: {', '.join(list_models())}")
    model_kwargs = _parse_model_args(args.model_arg)
    if args.gene:
        from nni_bixnas.space.gene_header import load_gene_file

        gene_path = Path(args.gene)
        if not gene_path.is_file():
            raise FileNotFoundError(f"gene file not found: {gene_path}")
        if args.model != "bixnet":
            raise ValueError(f"--gene applies to the bixnet model, not {args.model!r}")
        gene, merged = load_gene_file(str(gene_path), model_kwargs)  # --model-arg wins over the gene's header
        # the channels and classes come from the data, unless given with --model-arg
        model_kwargs = {k: v for k, v in merged.items() if k in model_kwargs or k not in ("in_channels", "num_classes")}
        model_kwargs["gene"] = gene.to_text()
    _show_training_log()
    out_dir = Path(args.out or f"runs/{args.model}_s{args.seed}")
    settings = TrainingSettings(
        data=args.data, batch_size=args.batch_size, seed=args.seed, split_seed=args.split_seed, lr=args.lr,
        patch_size=args.patch_size, resize=args.resize, val_fraction=args.val_fraction, precision=args.precision,
        accelerator=args.accelerator, devices=_parse_devices(args.devices), channels_last=args.channels_last,
        num_threads=args.num_threads, loss=args.loss,
    )
    result = fit(args.model, settings=settings, max_epochs=args.epochs, out_dir=out_dir, resume=not args.no_resume,
                 progress=not args.no_progress, model_kwargs=model_kwargs, num_workers=args.num_workers)
    print(
        f"best val IoU {_fmt(result.best_iou)}  Dice {_fmt(result.best_dice)} at epoch {result.best_epoch}; "
        f"checkpoints in {result.best_checkpoint.parent}"
    )
    return 0


# ---------------------------------------------------------------------------------------------------
# evaluate / predict


def format_scores(scores: Dict[str, Any]) -> str:
    """Human-readable :func:`nni_bixnas.training.evaluate` result."""
    return "\n".join(
        [
            f"checkpoint: {scores['checkpoint']} ({scores['model_name']})",
            f"data:       {scores['data']} ({scores['images']} images"
            + (", only those the checkpoint's run held out)" if scores.get("split") == "val" else ")"),
            f"IoU  per-image mean:             {scores['iou']:.4f}",
            f"Dice per-image mean:             {scores['dice']:.4f}",
            f"IoU  batch-pooled (batch {scores['batch_size']}, authors): {scores['iou_batch_pooled']:.4f}",
            f"Dice batch-pooled (batch {scores['batch_size']}, authors): {scores['dice_batch_pooled']:.4f}",
        ]
    )


def format_per_image(rows: List[Dict[str, Any]]) -> str:
    """One line per image of :func:`nni_bixnas.training.evaluate`'s ``per_image``: name, IoU, Dice, split."""
    width = max([5, *(len(r["image"]) for r in rows)])
    known = any(r["trained_on"] is not None for r in rows)
    lines = [f"{'image':{width}s}  IoU     Dice  " + ("  trained on" if known else "")]
    for r in rows:
        flag = "" if r["trained_on"] is None else ("  yes" if r["trained_on"] else "  no")
        lines.append(f"{r['image']:{width}s}  {r['iou']:.4f}  {r['dice']:.4f}{flag}")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    from nni_bixnas.training import evaluate

    _show_training_log()  # the warning when the data holds the checkpoint's training images
    scores = evaluate(args.checkpoint, args.data, batch_size=args.batch_size, resize=args.resize, device=args.device,
                      split=args.split, progress=not args.no_progress, num_threads=args.num_threads)
    if args.format == "json":
        print(json.dumps(scores, indent=2))
    else:
        print(format_per_image(scores["per_image"]) + "\n\n" + format_scores(scores))
    return 0


def _predict_line(entry: Dict[str, Any]) -> str:
    kinds = ("mask", "overlay", "contours", "probabilities", "comparison")
    line = f"{entry['image']} -> " + ", ".join(str(entry[k]) for k in kinds if k in entry)
    return line + (f"  IoU {entry['iou']:.4f}  Dice {entry['dice']:.4f}" if "iou" in entry else "")


def _empty_note(entry: Dict[str, Any]) -> str:
    if entry.get("threshold") is None:  # multi-class: the most probable class wins
        return (f"{entry['image']}: the prediction is empty: every pixel is background (highest probability of "
                f"another class {entry['highest_probability']:.3f})")
    return (f"{entry['image']}: the prediction is empty at threshold {entry['threshold']:g} (highest foreground "
            f"probability {entry['highest_probability']:.3f}); a lower --threshold may find something")


def format_predictions(entries: List[Dict[str, Any]]) -> str:
    """Per-image lines of :func:`nni_bixnas.training.predict`, one note per empty prediction, the mean IoU/Dice."""
    lines = [_predict_line(e) for e in entries]
    lines += [_empty_note(e) for e in entries if e["empty"]]
    scored = [e for e in entries if "iou" in e]
    if scored:
        iou, dice = (sum(e[k] for e in scored) / len(scored) for k in ("iou", "dice"))
        lines.append(f"mean over {len(scored)} image(s): IoU {iou:.4f}  Dice {dice:.4f}")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from nni_bixnas.training import predict

    written = predict(args.checkpoint, args.images, args.out, threshold=args.threshold, device=args.device,
                      probabilities=args.probabilities, gt=args.gt, progress=not args.no_progress,
                      num_threads=args.num_threads)
    print(format_predictions(written))
    return 0


# ---------------------------------------------------------------------------------------------------
# compare


def load_run(run_dir: str) -> Dict[str, Any]:
    """``{'run', 'model', 'seed', 'best_iou', 'best_dice'}`` of a ``bixnas train`` out dir.

    The seed is the one its ``run.json`` records (the run's configuration), else ``history.json``'s.
    """
    from nni_bixnas._checks import json_object

    path = Path(run_dir)
    history = path / "history.json"
    if not history.is_file():
        raise FileNotFoundError(f"{path} is not a finished-epoch training run (no history.json)")
    summary = json_object(history, "the history.json `bixnas train` writes; rerun or resume that training")
    config_path = path / "run.json"
    config = json_object(config_path, "the run.json `bixnas train` writes") if config_path.is_file() else {}
    if summary.get("best_iou") is None:
        raise ValueError(f"{history} has no validation IoU")
    return {
        "run": str(path),
        "model": config.get("model_name") or "?",
        "seed": config["seed"] if config.get("seed") is not None else summary.get("seed"),
        "best_iou": float(summary["best_iou"]),
        "best_dice": float(summary["best_dice"]),
    }


def run_compare(args: argparse.Namespace) -> int:
    if (args.a is None) != (args.b is None):
        raise ValueError("give both --a and --b to compare two groups, or neither")
    if args.a is not None:
        if args.runs:
            raise ValueError("use either positional RUNS (grouped by model) or --a/--b, not both")
        groups = {args.label_a: [load_run(r) for r in args.a], args.label_b: [load_run(r) for r in args.b]}
    else:
        if not args.runs:
            raise ValueError("no runs given: bixnas compare RUN... or --a RUN... --b RUN...")
        groups = {}
        for run in map(load_run, args.runs):
            groups.setdefault(run["model"], []).append(run)
    from nni_bixnas.comparison.stats import paired_test, summarize

    report: Dict[str, Any] = {"groups": [summarize(name, runs) for name, runs in groups.items()]}
    if args.a is not None:
        report["paired_t_test"] = {"a": args.label_a, "b": args.label_b, **paired_test(*groups.values())}
    print(json.dumps(report, indent=2) if args.format == "json" else format_comparison(report))
    return 0


def format_comparison(report: Dict[str, Any]) -> str:
    lines = ["| group | runs | seeds | best val IoU (mean ± std) | best val Dice (mean ± std) |",
             "|---|---:|---|---|---|"]
    for g in report["groups"]:
        lines.append(
            f"| {g['group']} | {g['n']} | {', '.join(map(str, g['seeds']))} | "
            f"{g['iou']['mean']:.4f} ± {g['iou']['std']:.4f} | {g['dice']['mean']:.4f} ± {g['dice']['std']:.4f} |"
        )
    test = report.get("paired_t_test")
    if test:
        lines.append("")
        lines.append(f"Paired two-tailed t-test, {test['a']} vs {test['b']}, paired by seed {test['paired_seeds']}:")
        for metric in ("iou", "dice"):
            r = test[metric]
            t, p = ("n/a" if r[k] is None else f"{r[k]:{f}}" for k, f in (("t", ".3f"), ("p", ".4g")))
            lines.append(f"  {metric.upper():4s} mean diff {r['mean_diff']:+.4f}  t = {t}  p = {p}")
    return "\n".join(lines)


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# ---------------------------------------------------------------------------------------------------
# parsers


#: ``nni_bixnas.list_models()``, kept here so that ``bixnas train --help`` does not load torch
#: (tests/test_cli_lazy.py checks that it is the registry).
REGISTERED_MODELS = ("autodeeplab", "bionet", "bionet_pp", "bixnet", "nasunet", "r2unet", "unet")


def add_parser(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="retrain a network (best-val-IoU and last checkpoints, resumable)",
        description="Train a registered network with the authors' recipe (Adam, 1/(1+3e-3*epoch) decay, BCE). "
                    "Re-running the same command resumes from OUT/checkpoints/last.ckpt.",
    )
    train.add_argument("--model", required=True,
                       help=f"registered model: {', '.join(REGISTERED_MODELS)} (bixnet takes --gene)")
    train.add_argument("--data", default="default", help="data spec, e.g. monuseg:PATH (default: embedded data)")
    train.add_argument("--epochs", type=int, default=300, help="total epochs (default 300, as the authors)")
    train.add_argument("--batch-size", type=int, default=2)
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling, augmentation and crops")
    train.add_argument("--split-seed", type=int, default=0,
                       help="seed of the train/validation split, kept fixed across training seeds (default 0)")
    train.add_argument("--out", help="run folder (default runs/<model>_s<seed>)")
    train.add_argument("--patch-size", type=int, metavar="N",
                       help="random crop size for training; validation uses full patches (default: whole items)")
    train.add_argument("--resize", type=int, metavar="N",
                       help="downscale every patch, training and validation, to N x N (before any crop)")
    train.add_argument("--val-fraction", type=float, default=0.2)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--loss", choices=["ce", "dice_ce"], default="ce",
                       help="ce: the authors' cross-entropy (default); dice_ce: plus the soft Dice of the foreground")
    train.add_argument("--precision", help="e.g. bf16-mixed or 16-mixed on a GPU (default 32-true)")
    train.add_argument("--accelerator", default="auto")
    train.add_argument("--devices", default="auto", help="number of devices, or a comma list of ids")
    train.add_argument("--channels-last", action="store_true",
                       help="weights in channels_last memory format (often faster on GPUs with --precision bf16-mixed)")
    train.add_argument("--num-workers", type=int, default=0)
    _add_num_threads(train)
    train.add_argument("--no-resume", action="store_true", help="start afresh even if OUT has a last.ckpt")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (the per-epoch log line stays)")
    train.add_argument("--model-arg", action="append", metavar="KEY=VALUE", default=[],
                       help="extra create_model argument, e.g. --model-arg width=16 (repeatable)")
    train.add_argument("--gene", help="gene file for bixnet (the searched architecture)")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "evaluate", help="IoU/Dice of a checkpoint on a dataset, per image and in all",
        description="Score a checkpoint on every image of a dataset: a line per image, then the per-image mean "
                    "and the authors' batch-pooled IoU/Dice. When the data is the one the checkpoint was trained on "
                    "(its run.json beside the checkpoint says so), a warning says how many of the images it trained "
                    "on; --split val scores only the images its run held out.",
    )
    evaluate.add_argument("--checkpoint", required=True,
                          help="a .ckpt written by bixnas train (loaded weights-only)")
    evaluate.add_argument("--data", required=True, help="data spec, e.g. tnbc:PATH")
    evaluate.add_argument("--batch-size", type=int, default=2, help="affects only the batch-pooled variant")
    evaluate.add_argument("--resize", type=int, metavar="N",
                          help="downscale every patch to N x N before scoring (default: full patches)")
    evaluate.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    evaluate.add_argument("--split", choices=("all", "val"), default="all",
                          help="all images (default), or only those the checkpoint's run held out for validation "
                               "(needs the run.json of its run folder, and the data it was trained on)")
    evaluate.add_argument("--format", choices=("text", "json"), default="text")
    _add_num_threads(evaluate, progress=True)
    evaluate.set_defaults(func=run_evaluate)

    predict = subparsers.add_parser(
        "predict", help="write masks, overlays and contours (and IoU/Dice with --gt) for images",
        description="Segment images; for each IMAGE write OUT/<stem>_mask.png (0/255, or class ids), "
                    "<stem>_overlay.png (filled), <stem>_contours.png (outlines), with --probabilities "
                    "<stem>_prob.png (foreground probability 0..255) and with --gt <stem>_gt_vs_pred.png (ground "
                    "truth, left, beside the prediction, right, each captioned) and per-image IoU/Dice. An image "
                    "whose prediction is empty at the threshold gets a line saying so.",
    )
    predict.add_argument("--checkpoint", required=True,
                         help="a .ckpt written by bixnas train (loaded weights-only)")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--threshold", type=float, help="binary threshold (default: the training one)")
    predict.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    predict.add_argument("--probabilities", action="store_true",
                         help="also write <stem>_prob.png, the foreground probability as 0..255")
    predict.add_argument("--gt", metavar="MASK|DIR|SPEC",
                         help="ground truth: a mask file (one image), a folder of masks named <stem>.png or "
                              "<stem>_mask.png (it may also hold the images: they are never their own masks), "
                              "or a data spec (e.g. monuseg:PATH) with items named like the images")
    _add_num_threads(predict, progress=True)
    predict.set_defaults(func=run_predict)

    compare = subparsers.add_parser(
        "compare", help="mean ± std of runs per model; paired t-test between two groups",
        description="Summarise best validation IoU/Dice over seeds. Positional RUNS are grouped by model; "
                    "--a RUNS --b RUNS compares two groups with a two-tailed paired t-test, pairing runs by seed. "
                    "Example: bixnas compare --a runs/bixnet_s* --b runs/unet_s*",
    )
    compare.add_argument("runs", nargs="*", metavar="RUN", help="bixnas train out dirs")
    compare.add_argument("--a", nargs="+", metavar="RUN", help="first group of runs")
    compare.add_argument("--b", nargs="+", metavar="RUN", help="second group of runs")
    compare.add_argument("--label-a", default="A")
    compare.add_argument("--label-b", default="B")
    compare.add_argument("--format", choices=("text", "json"), default="text")
    compare.set_defaults(func=run_compare)
