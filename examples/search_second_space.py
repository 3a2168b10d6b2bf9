"""Run BiX-NAS on a search space other than BiO-Net++: the nested-skip net of ``second_space.py``.

Phase 1 (:class:`~nni_bixnas.strategy.SelectionMatrix`) narrows every skip choice of
``NestedSkipNet``; Phase 2 (:class:`~nni_bixnas.strategy.ProgressiveEvolution`) then searches within
the candidates, on the same space class, unchanged. Both run in-process on NNI's
``SequentialExecutionEngine`` with the embedded synthetic data by default::

    python examples/search_second_space.py --epochs 2
    python examples/search_second_space.py --data monuseg:/data/MoNuSegTrainingData --epochs 50 --width 16

Outputs (under ``--out-dir``): ``phase1/`` (checkpoints, ``candidates.json``, the selection-matrix
heat map) and ``result.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nni.nas.execution import SequentialExecutionEngine  # noqa: E402
from nni.nas.space import RawFormatModelSpace  # noqa: E402

from nni_bixnas.strategy import ProgressiveEvolution, SelectionMatrix  # noqa: E402
from nni_bixnas.strategy.supernet.supermodule import VARIANTS  # noqa: E402
from nni_bixnas.training import make_evaluator  # noqa: E402
from nni_bixnas.utils import atomic_write  # noqa: E402
from second_space import NestedSkipNet  # noqa: E402

_logger = logging.getLogger("search_second_space")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default="default:n=16,size=32", help="data spec (default: %(default)s, the embedded synthetic tiles)"
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="Phase 1 supernet epochs (default: %(default)s; the paper uses 300)"
    )
    parser.add_argument("--width", type=int, default=4, help="channels of every node (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=3, help="levels below full resolution (default: %(default)s)")
    parser.add_argument(
        "--max-k", type=int, default=None, help="largest skip subset per node (default: N - 2, at least 1)"
    )
    parser.add_argument("--batch-size", type=int, default=2, help="batch size (default: %(default)s)")
    parser.add_argument(
        "--variant", choices=VARIANTS, default="code", help="selection-matrix forward (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--out-dir", default=None, help="output folder (default: a new temporary folder)")
    parser.add_argument("--no-phase2", action="store_true", help="stop after Phase 1")
    parser.add_argument(
        "--phase2-kwargs", default="{}", type=json.loads,
        help="JSON keyword arguments of ProgressiveEvolution, over the tiny defaults "
        "(samples=2, epochs=--epochs, keep=1; default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="bixnas-second-space-"))
    evaluator = make_evaluator(data=args.data, batch_size=args.batch_size, seed=args.seed, max_epochs=args.epochs)
    space_kwargs = dict(in_channels=3, num_classes=1, width=args.width, depth=args.depth, max_k=args.max_k)
    if not args.data.startswith("default"):
        from nni_bixnas.data import SegDataModule

        info = SegDataModule(data=args.data).info
        space_kwargs.update(in_channels=info.in_channels, num_classes=info.num_classes)

    phase1 = SelectionMatrix(epochs=args.epochs, variant=args.variant, out_dir=out_dir / "phase1", seed=args.seed)
    phase1(RawFormatModelSpace.from_model(NestedSkipNet(**space_kwargs), evaluator), SequentialExecutionEngine())
    result = {"phase1": {
        "candidates": phase1.candidates, "val_iou": phase1.result["default"], "heatmap": phase1.result["heatmap"],
    }}
    print(f"Phase 1 candidates: {phase1.candidates}")
    print(f"Phase 1 heat map:   {phase1.result['heatmap']}")

    if not args.no_phase2:
        phase2_kwargs = dict(
            candidates=phase1.candidates, samples=2, epochs=args.epochs, keep=1, seed=args.seed,
            out_dir=str(out_dir / "phase2"), macs_input_size=(64, 64),
        )
        phase2_kwargs.update(args.phase2_kwargs)
        phase2 = ProgressiveEvolution(**phase2_kwargs)
        phase2(RawFormatModelSpace.from_model(NestedSkipNet(**space_kwargs), evaluator), SequentialExecutionEngine())
        result["phase2"] = {"final_samples": phase2.final_samples, "history": [h.to_dict() for h in phase2.history]}
        print(f"Phase 2 architectures (best IoU first): {phase2.final_samples}")

    with atomic_write(out_dir / "result.json") as handle:
        json.dump(result, handle, indent=2)
    print(f"Results in {out_dir}")
    return result


if __name__ == "__main__":
    main()
