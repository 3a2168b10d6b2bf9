"""``bixnas table1``: the paper's Table 1 in one command (:mod:`nni_bixnas.comparison.table1`).

torch and NNI are imported when the command runs, not at import (``bixnas table1 --help`` stays fast).
"""

from __future__ import annotations

import argparse

from .train import _add_num_threads, _show_training_log

HELP = "the paper's Table 1: every model, one recipe and seeds, test set and TNBC, t-tests"


def run_table1(args: argparse.Namespace) -> int:
    from nni_bixnas.comparison.table1 import TABLE_NAME, format_table
    from nni_bixnas.comparison.table1 import run_table1 as build

    _show_training_log()
    report = build(args.data, out_dir=args.out, epochs=args.epochs, seeds=args.seeds, models=args.models,
                   test=args.test, tnbc=args.tnbc, batch_size=args.batch_size, patch_size=args.patch_size,
                   resize=args.resize, lr=args.lr, split_seed=args.split_seed, val_fraction=args.val_fraction,
                   accelerator=args.accelerator, num_threads=args.num_threads)
    print(format_table(report), end="")
    print(f"\nwritten: {args.out}/{TABLE_NAME}.md, {args.out}/{TABLE_NAME}.json")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "table1", help=HELP,
        description="Train every Table 1 model with the same recipe and seeds on one fixed train/validation split "
                    "of --data, score each run's best-validation-IoU checkpoint on --test and on --tnbc (transfer: "
                    "nothing is trained on it), and write OUT/table1.md and OUT/table1.json: per model mean ± std of "
                    "IoU and Dice, params, MACs at 512x512, and the paired two-tailed t-test of BiX-Net against "
                    "each other model. Re-running the same command resumes: finished runs are not redone, an "
                    "interrupted training continues from its last.ckpt. "
                    "Example: bixnas table1 --data monuseg:MoNuSegTrainingData --test monuseg:MoNuSegTestData "
                    "--tnbc tnbc:TNBC --seeds 0 1 2 --epochs 300 --out runs/table1",
    )
    parser.add_argument("--data", default="default", help="training data spec, e.g. monuseg:PATH (default: embedded)")
    parser.add_argument("--test", metavar="SPEC",
                        help="test set spec, every image scored (default: the split's validation part, which also "
                             "chooses the checkpoints: an optimistic estimate)")
    parser.add_argument("--tnbc", metavar="SPEC", help="transfer set spec, e.g. tnbc:PATH (default: none)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                        help="training seeds, the same for every model (default 0 1 2)")
    parser.add_argument("--epochs", type=int, default=300, help="epochs of every run (default 300, as the paper)")
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        help="registered models (default: unet r2unet bionet nasunet autodeeplab bionet_pp bixnet)")
    parser.add_argument("--out", default="runs/table1", help="output folder (default runs/table1)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--patch-size", type=int, metavar="N",
                        help="random crop size for training; validation and scoring use full patches")
    parser.add_argument("--resize", type=int, metavar="N",
                        help="downscale every patch (training, validation, test, TNBC) to N x N")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--accelerator", default="auto", help="auto, cpu or gpu")
    _add_num_threads(parser)
    parser.set_defaults(func=run_table1)
