"""``bixnas cv``: k-fold cross-validation by patient on CHAOS MR, per-organ IoU/Dice (the paper's Table 2)."""

from __future__ import annotations

import argparse

from nni_bixnas.cli.train import _add_num_threads, _parse_devices, _parse_model_args, _positive, _show_training_log


def run_cv(args: argparse.Namespace) -> int:
    from nni_bixnas.comparison.cross_validation import cross_validate, format_markdown

    _show_training_log()
    report = cross_validate(
        args.data, args.model, epochs=args.epochs, out_dir=args.out, folds=args.folds, seeds=args.seeds,
        batch_size=args.batch_size, lr=args.lr, split_seed=args.split_seed, resize=args.resize,
        model_kwargs=_parse_model_args(args.model_arg), precision=args.precision, accelerator=args.accelerator,
        devices=_parse_devices(args.devices), num_threads=args.num_threads, progress=not args.no_progress,
        checkpoint=args.checkpoint,
    )
    print(format_markdown(report), end="")
    return 0


def add_parser(subparsers) -> None:
    cv = subparsers.add_parser(
        "cv", help="k-fold cross-validation by patient on CHAOS MR, per-organ IoU/Dice (Table 2)",
        description="Train one multi-class model (liver, kidneys, spleen) per fold and seed on a CHAOS Train_Sets/MR "
                    "folder, folds split by patient (all three MR series of a patient in one fold), score each "
                    "fold's best checkpoint on its held-out patients organ by organ, and write OUT/cv.json and "
                    "OUT/cv.md (mean ± std over folds, as the paper's Table 2). Rerunning the same command skips "
                    "the folds already done and resumes an interrupted one.",
    )
    cv.add_argument("--data", required=True, help="chaos:PATH, the CHAOS Train_Sets/MR folder")
    cv.add_argument("--model", default="bixnet", help="registered model (default bixnet)")
    cv.add_argument("--folds", type=_positive, default=5, help="number of folds (default 5, as the paper)")
    cv.add_argument("--epochs", type=_positive, required=True, help="training epochs of every fold")
    cv.add_argument("--out", required=True, help="output folder: seed_<s>/fold_<k>/ runs, cv.json, cv.md")
    cv.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                    help="training seeds; every fold is trained once per seed (default 0)")
    cv.add_argument("--batch-size", type=_positive, default=16, help="default 16, the paper's for CHAOS")
    cv.add_argument("--lr", type=float, default=1e-3)
    cv.add_argument("--split-seed", type=int, default=0, help="seed of the assignment of patients to folds")
    cv.add_argument("--resize", type=_positive, metavar="N",
                    help="resize the 256 x 256 slices to N x N for training and scoring (default: keep 256)")
    cv.add_argument("--checkpoint", choices=("best", "last"), default="best",
                    help="the checkpoint of each fold that is scored: best validation IoU (default; chosen on the "
                         "fold's held-out patients) or the last epoch's")
    cv.add_argument("--model-arg", action="append", metavar="KEY=VALUE", default=[],
                    help="extra create_model argument, e.g. --model-arg width=16 (repeatable)")
    cv.add_argument("--precision", help="e.g. bf16-mixed or 16-mixed on a GPU (default 32-true)")
    cv.add_argument("--accelerator", default="auto")
    cv.add_argument("--devices", default="auto", help="number of devices, or a comma list of ids")
    _add_num_threads(cv)
    cv.add_argument("--no-progress", action="store_true", help="no progress bar (the per-epoch log line stays)")
    cv.set_defaults(func=run_cv)
