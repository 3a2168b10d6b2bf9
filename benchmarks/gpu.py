"""The device benchmark: training throughput, Phase 2 step cost and memory, and one real retraining, on a GPU.

Written for one short run on a lent GPU (the whole script stops itself within ``--budget`` seconds, 8 min by
default, and prints its progress), and runnable here as ``--device cpu --quick`` (a slow test does, so that
the script cannot rot). Sections, in order, each skipped when the time left is too short:

1. training images/s at ``--size`` (512) for BiX-Net, BiO-Net++, U-Net and BiO-Net at batch 2 and 16, in
   fp32, bf16 autocast, and bf16 with channels_last weights (forward, backward, Adam step; median step);
2. one Phase 2 step per method (low_memory, plain, batched, naive) at ``--size``, s=15 members, stage 1:
   time and ``torch.cuda.max_memory_allocated`` (on CPU: time only);
3. CUDA only: the largest population each fair method fits in 80% of the card (populations doubled from 15);
4. in the time left: a retraining of BiX-Net on MoNuSeg (``--monuseg``) at ``--size`` in ``--retrain-precision``,
   with its val IoU curve.

Results go to ``--out`` (``benchmarks/results/gpu.md``), with machine, command and date, written by this
script. On CPU, ``torch.set_num_threads(--threads)`` is set (default 2).

Usage on the device (after installing ``.devcarry``, see ``shared/tools/device-carry.sh``)::

    python benchmarks/gpu.py --monuseg .devcarry/monuseg/MoNuSegTrainingData
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytorch_lightning as pl
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nni_bixnas import create_model  # noqa: E402
from nni_bixnas.utils import atomic_write  # noqa: E402
from phase2_cost import one_step, setup  # noqa: E402  (benchmarks/ is not a package)

RESULT = Path(__file__).parent / "results" / "gpu.md"
MODELS = ("bixnet", "bionet_pp", "unet", "bionet")
MODES = ("fp32", "bf16", "bf16+channels_last")
STEPS = ("low_memory", "plain", "batched", "naive")


class Clock:
    """Seconds left of the budget; ``log`` prints progress with the elapsed time."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def log(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f}s] {text}", flush=True)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], None], device: str, repeats: int) -> float:
    """Median seconds of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def throughput(name: str, batch: int, mode: str, size: int, device: str, repeats: int) -> float:
    """Training images/s of registry model ``name``: forward, BCE, backward, Adam step."""
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=1).to(device).train()
    if "channels_last" in mode:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.rand(batch, 3, size, size, device=device)
    target = (torch.rand(batch, 1, size, size, device=device) > 0.6).float()
    loss_fn = nn.BCEWithLogitsLoss()
    use_bf16 = mode.startswith("bf16")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=use_bf16):
            loss = loss_fn(model(images).float(), target)
        loss.backward()
        optimizer.step()

    return batch / _timed(step, device, repeats)


def phase2_step(method: str, size: int, samples: int, device: str, repeats: int) -> Dict[str, float]:
    parts = setup(size, samples, 1, device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = _timed(lambda: one_step(method, *parts[:4], 1, parts[4]), device, repeats)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return {"seconds": seconds, "peak_gib": peak}


def largest_population(method: str, size: int, device: str, clock: Clock, limit: int = 960) -> Optional[int]:
    """The largest population (15, 30, 60, ...) whose step stays within 80% of the card's memory."""
    total = torch.cuda.get_device_properties(device).total_memory
    fits, samples = None, 15
    while samples <= limit and clock.left() > 60:
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            model, optimizer, images, target, members = setup(size, samples, 1, device)
            one_step(method, model, optimizer, images, target, 1, members)
            torch.cuda.synchronize()
            ok = torch.cuda.max_memory_allocated() <= 0.8 * total
            del model, optimizer
        except torch.cuda.OutOfMemoryError:
            ok = False
        torch.cuda.empty_cache()
        clock.log(f"population {method} s={samples}: {'fits' if ok else 'does not fit'}")
        if not ok:
            break
        fits, samples = samples, samples * 2
    return fits


class TimeLimit(pl.Callback):
    """Stop training at the end of the epoch in which ``clock`` runs below ``reserve`` seconds."""

    def __init__(self, clock: Clock, reserve: float) -> None:
        self.clock, self.reserve = clock, reserve

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.clock.left() < self.reserve:
            trainer.should_stop = True


def retrain(args, clock: Clock) -> List[Dict[str, float]]:
    from nni_bixnas.training import fit

    with tempfile.TemporaryDirectory() as run:
        result = fit("bixnet", f"monuseg:{args.monuseg}", max_epochs=args.epochs, out_dir=run, seed=0,
                     batch_size=2, patch_size=args.size, accelerator="gpu" if args.device.startswith("cuda") else "cpu",
                     devices=1, progress=False, precision=args.retrain_precision,
                     callbacks=[TimeLimit(clock, reserve=20)])
    return [{"epoch": r["epoch"], "val_iou": r.get("val_iou"), "seconds": r.get("train_seconds")}
            for r in result.history]


def machine(device: str) -> str:
    text = f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, device {device}"
    if device.startswith("cuda"):
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        text += f" ({torch.cuda.get_device_name(device)}, {memory:.0f} GiB)"
    else:
        text += f" ({torch.get_num_threads()} torch threads)"
    return text


def report(args, sections: Dict[str, list], clock: Clock) -> str:
    lines = [
        "# Device benchmark",
        "",
        f"- command: `python benchmarks/gpu.py {' '.join(sys.argv[1:])}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; machine: {machine(args.device)}",
        f"- input {args.size} px; medians of {args.repeats} timed steps after a warm-up; total "
        f"{clock.budget - clock.left():.0f} s of a {clock.budget:.0f} s budget",
        "",
        "## Training images/s",
        "",
        "| model | batch | " + " | ".join(MODES) + " |",
        "|---|---|" + "---|" * len(MODES),
    ]
    for row in sections["throughput"]:
        lines.append(f"| {row['model']} | {row['batch']} | "
                     + " | ".join(f"{row[m]:.1f}" if m in row else "–" for m in MODES) + " |")
    by = {(r["model"], r["batch"]): r for r in sections["throughput"]}
    for batch in args.batches:
        bix, unet = by.get(("bixnet", batch), {}), by.get(("unet", batch), {})
        if "fp32" in bix and "fp32" in unet:
            lines.append(f"\nbixnet/unet train images/s ratio at batch {batch}, fp32: {bix['fp32'] / unet['fp32']:.2f}")
    lines += ["", f"## One Phase 2 step, stage 1, s={args.samples}", "",
              "| step | seconds | peak GiB | naive/step |", "|---|---|---|---|"]
    steps = {r["step"]: r for r in sections["phase2"]}
    for name, r in steps.items():
        ratio = steps["naive"]["seconds"] / r["seconds"] if "naive" in steps else float("nan")
        lines.append(f"| {name} | {r['seconds']:.3f} | {r['peak_gib']:.2f} | {ratio:.2f} |")
    lines += ["", "## Largest population in 80% of the card", ""]
    if sections["population"]:
        lines += [f"- {r['step']}: s = {r['fits'] if r['fits'] else 'under 15'}" for r in sections["population"]]
    else:
        lines.append("- not measured (CUDA only, or no time left)")
    lines += ["", f"## BiX-Net retraining on MoNuSeg ({args.retrain_precision})", ""]
    if sections["retrain"]:
        lines += ["| epoch | val IoU | train s |", "|---|---|---|"]
        lines += [f"| {r['epoch']} | {r['val_iou']:.4f} | {r['seconds']:.1f} |" for r in sections["retrain"]]
    else:
        lines.append("- not run (no --monuseg data, or no time left)")
    lines += ["", *[f"- skipped: {s}" for s in sections["skipped"]], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a check on CPU")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole script (default 480)")
    parser.add_argument("--monuseg", help="MoNuSegTrainingData folder for the retraining section")
    parser.add_argument("--epochs", type=int, default=40, help="retraining epochs at most (the budget decides)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (set explicitly)")
    parser.add_argument("--retrain-precision", default="32-true",
                        help="precision of the retraining (default 32-true: bf16 moves the BiO-Net family's outputs "
                             "far from float32, benchmarks/results/precision.md)")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.size, args.batches, args.samples, args.repeats = (64, [2], 3, 1) if args.quick else (512, [2, 16], 15, 5)
    models = MODELS[:1] + ("unet",) if args.quick else MODELS
    clock = Clock(args.budget)
    clock.log(f"device {machine(args.device)}")
    sections: Dict[str, list] = {"throughput": [], "phase2": [], "population": [], "retrain": [], "skipped": []}

    for name in models:
        for batch in args.batches:
            row = {"model": name, "batch": batch}
            for mode in MODES:
                if clock.left() < 0.5 * args.budget:
                    sections["skipped"].append(f"throughput {name} batch {batch} {mode}: half the budget spent")
                    continue
                row[mode] = throughput(name, batch, mode, args.size, args.device, args.repeats)
                clock.log(f"throughput {name} batch {batch} {mode}: {row[mode]:.1f} images/s")
            sections["throughput"].append(row)
    for step in STEPS:
        if clock.left() < 0.35 * args.budget:
            sections["skipped"].append(f"phase 2 step {step}: time")
            continue
        result = phase2_step(step, args.size, args.samples, args.device, max(1, args.repeats // 2))
        sections["phase2"].append({"step": step, **result})
        clock.log(f"phase 2 {step}: {result['seconds']:.3f} s, peak {result['peak_gib']:.2f} GiB")
    if args.device.startswith("cuda"):
        for step in STEPS[:3]:
            if clock.left() < 0.25 * args.budget:
                sections["skipped"].append(f"population {step}: time")
                continue
            sections["population"].append({"step": step, "fits": largest_population(step, args.size, args.device,
                                                                                     clock)})
    if args.monuseg and clock.left() > 60:
        clock.log("retraining BiX-Net on MoNuSeg")
        sections["retrain"] = retrain(args, clock)
    elif args.monuseg:
        sections["skipped"].append("retraining: time")
    text = report(args, sections, clock)
    with atomic_write(args.out) as handle:
        handle.write(text)
    clock.log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
