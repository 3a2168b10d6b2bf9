"""Run the whole BiX-NAS search (Phase 1 -> Phase 2 -> retraining) from Python with ``NasExperiment``.

Defaults are sized for a 2-core CPU on the embedded synthetic data (a few minutes). Interrupt it and run
the same command again: it continues after the last finished unit (Phase 1, a Phase 2 stage, a retrain).

    python examples/search_python.py --out runs/search                   # in-process (sequential engine)
    python examples/search_python.py --engine ts --port 8081 --out runs/search   # trials + NNI web UI
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="default:n=24,size=64", help="data spec (default: embedded synthetic tiles)")
    p.add_argument("--width", type=int, default=8, help="BiO-Net++ block width (paper: 48)")
    p.add_argument("--stem-width", type=int, default=8, help="stem/head width (paper: 32)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--phase1-epochs", type=int, default=4, help="Phase 1 epochs (paper: 300)")
    p.add_argument("--phase2-epochs", type=int, default=2, help="epochs per Phase 2 stage (paper: 40)")
    p.add_argument("--samples", type=int, default=4, help="skip sets sampled per Phase 2 stage (paper: 15)")
    p.add_argument("--retrain-epochs", type=int, default=4, help="retraining epochs (paper: 300)")
    p.add_argument("--retrain-seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds of the winner's retraining")
    p.add_argument("--seed", type=int, default=0, help="seed of the search (same seed, same architecture)")
    p.add_argument("--engine", choices=["sequential", "ts"], default="sequential",
                   help="'sequential': in this process; 'ts': each unit is an NNI trial, with the web UI")
    p.add_argument("--port", type=int, default=8081, help="web UI port (with --engine ts)")
    p.add_argument("--out", default="runs/search_python", help="output folder (state, genes, checkpoints)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    from nni_bixnas.space import BiONetPlusPlus
    from nni_bixnas.strategy import BiXNAS
    from nni_bixnas.training import make_evaluator

    if args.engine == "ts":
        import nni_bixnas.experiment  # noqa: F401  (websocket fix for NAS engines hosted in this process)
    out = Path(args.out).resolve()
    space = BiONetPlusPlus(width=args.width, stem_width=args.stem_width)
    evaluator = make_evaluator(data=args.data, batch_size=args.batch_size, max_epochs=args.retrain_epochs)
    strategy = BiXNAS(
        phase1={"epochs": args.phase1_epochs},
        phase2={"samples": args.samples, "epochs": args.phase2_epochs},
        retrain={"seeds": args.retrain_seeds, "max_epochs": args.retrain_epochs} if args.retrain_seeds else None,
        out_dir=str(out),
        seed=args.seed,
    )
    config = NasExperimentConfig(args.engine, "raw" if args.engine == "sequential" else "simplified", "local")
    config.experiment_working_directory = str(out / "nni-experiments")
    experiment = NasExperiment(space, evaluator, strategy, config=config)
    experiment.run(port=args.port)
    result = json.loads((out / "result.json").read_text())
    print((out / "gene.txt").read_text(), end="")
    print(json.dumps({"best_sample": result["final_samples"][0],
                      "retrained_iou_mean": result.get("retrained_iou_mean")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
