"""CPU training speed of BiX-Net vs U-Net: images/s of forward + backward + Adam steps, in one process.

Every configuration is timed in each of ``--repeats`` interleaved rounds (``--steps`` steps a round after a
warm-up); the figure is the median round, by the process's CPU time (wall-clock figures beside it): on a
shared machine the wall clock measures the other processes as much as the step. Configurations: BiX-Net
(``create_model('bixnet')``), the same network run by its pre-change forward (:func:`legacy_forward`: every
sequential input and every bridge computed, ``torch.stack(...).mean(0)`` fusion) and U-Net, each with
contiguous weights (the default) and with ``torch.channels_last`` weights (``fit(channels_last=True)``;
inputs stay contiguous, as there). One profiled step per configuration splits the CPU time by operator kind.

Usage::

    python benchmarks/train_speed.py [--size 128] [--batch-size 2] [--threads 1] [--repeats 15] [--steps 2]
    python benchmarks/train_speed.py --quick --out /tmp/train_speed.md   # seconds; checks the script runs
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from nni_bixnas import create_model
from nni_bixnas.utils import atomic_write

RESULT = Path(__file__).parent / "results" / "train_speed.md"
LOSS = nn.BCEWithLogitsLoss()
LAYOUTS = ("contiguous", "channels_last")
# (label, model name, forward)
LEGACY = "bixnet, pre-change forward"
MODELS = (("bixnet", "bixnet", "current"), (LEGACY, "bixnet", "legacy"), ("unet", "unet", "current"))
GROUPS = (("convolution", ("conv",)), ("batch norm", ("batch_norm",)),
          ("pool / resize", ("pool", "upsample", "interpolate")), ("optimizer", ("adam", "optimizer", "lerp",
                                                                               "addcdiv", "addcmul", "sqrt")))


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
    return x


def legacy_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``BiONetPlusPlus.forward`` as it was before the pruning (``nni_bixnas`` 3fd33f9): every stage forms
    every sequential input and (encoders) runs the bridge, and fusion is ``torch.stack(picked).mean(0)``."""
    skipped = net._skipped()
    stem = net.stem(x)
    previous: Tuple[torch.Tensor, ...] = ()
    bridge = None
    for stage in range(net.n_stages):
        it, is_decoder = divmod(stage, 2)
        kind = "dec" if is_decoder else "enc"
        outputs: List[torch.Tensor] = []
        h = bridge if is_decoder else stem
        for level in range(net.levels):
            label = f"{kind}_{it}_{level}"
            if level > 0:
                h = net._to_next_level(outputs[-1], is_decoder)
            if label not in skipped and label in net.blocks:
                block, convs = net.blocks[label], net.convs[f"{kind}_{level}"]
                inputs = [h, *previous]
                picked = [_resize(inputs[i], h.shape[-2:]) for i in block.fusion.chosen]
                fused = picked[0] if len(picked) == 1 else torch.stack(picked).mean(0)
                h = block.act(block.bn2(convs[1](block.act(block.bn1(convs[0](fused))))))
            outputs.append(h)
        if not is_decoder:
            bridge = net.bridge(F.max_pool2d(outputs[-1], 2))
            bridge = F.interpolate(bridge, size=outputs[-1].shape[-2:], mode="bilinear", align_corners=True)
        previous = tuple(outputs)
    return net.head(F.interpolate(previous[-1], size=x.shape[-2:], mode="bilinear", align_corners=True))


class Legacy(nn.Module):
    """``net`` run by :func:`legacy_forward` (same parameters, same state)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return legacy_forward(self.net, x)


def build(name: str, forward: str, layout: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(name)
    if forward == "legacy":
        model = Legacy(model)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)  # what fit(channels_last=True) does
    return model.train()


def make_step(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        LOSS(model(images), target).backward()
        optimizer.step()

    return step


def exactness(images: torch.Tensor, target: torch.Tensor, seed: int) -> Tuple[bool, float]:
    """One forward + backward of BiX-Net by its forward and by :func:`legacy_forward` from the same state:
    (logits, running statistics and gradients bit-identical, largest difference relative to the largest value)."""
    net = build("bixnet", "current", "contiguous", seed)
    old = Legacy(copy.deepcopy(net))
    pairs = []
    for model in (net, old):
        logits = model(images)
        LOSS(logits, target).backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        pairs.append([logits.detach(), *grads, *model.buffers()])
    same = all(torch.equal(a, b) for a, b in zip(*pairs))
    worst = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() for a, b in zip(*pairs) if b.numel())
    return same, worst


def profile_split(step: Callable[[], None]) -> Dict[str, float]:
    """Share of one step's self CPU time by operator group."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    split = {name: 0.0 for name, _ in GROUPS}
    split["other"] = 0.0
    for event in prof.key_averages():
        key = event.key.lower()
        group = next((name for name, words in GROUPS if any(w in key for w in words)), "other")
        split[group] += event.self_cpu_time_total
    total = sum(split.values()) or 1.0
    return {name: value / total for name, value in split.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="square input size (a multiple of 32); "
                        "128 and batch 2 are train_monuseg.py's recipe")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (one: steadier on a shared "
                        "machine)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds (the median is reported)")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per configuration and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run (64², 2 rounds of 1 step) to check the script")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.repeats, args.steps, args.warmup = 64, 2, 1, 1

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    images = torch.rand(args.batch_size, 3, args.size, args.size, generator=g)
    target = (torch.rand(args.batch_size, 1, args.size, args.size, generator=g) > 0.5).float()
    same, worst = exactness(images, target, args.seed)

    configs = [(label, layout) for layout in LAYOUTS for label, _, _ in MODELS]
    steps = {}
    for label, name, forward in MODELS:
        for layout in LAYOUTS:
            steps[label, layout] = make_step(build(name, forward, layout, args.seed), images, target)
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    wall: Dict[tuple, List[float]] = {c: [] for c in configs}
    cpu: Dict[tuple, List[float]] = {c: [] for c in configs}
    for r in range(args.repeats):
        for config in configs[r % len(configs):] + configs[:r % len(configs)]:  # rotate the order each round
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                steps[config]()
            images_done = args.steps * args.batch_size
            wall[config].append(images_done / (time.perf_counter() - t0))
            cpu[config].append(images_done / max(time.process_time() - c0, 1e-9))
        print(f"round {r + 1}/{args.repeats} done", flush=True)
    splits = {config: profile_split(steps[config]) for config in configs}
    load_after = os.getloadavg()
    seconds = time.perf_counter() - started

    median = {c: statistics.median(v) for c, v in wall.items()}
    ratio = {(label, layout): median[label, layout] / median["unet", layout] for label, layout in configs}
    cpu_median = {c: statistics.median(v) for c, v in cpu.items()}
    cpu_ratio = {(label, layout): cpu_median[label, layout] / cpu_median["unet", layout] for label, layout in configs}
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# CPU training speed: BiX-Net vs U-Net",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; {seconds:.0f} s",
        f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, Python {platform.python_version()}; `torch.set_num_threads({args.threads})`",
        f"- Load average (1/5/15 min) before: {'/'.join(f'{v:.2f}' for v in load_before)}, "
        f"after: {'/'.join(f'{v:.2f}' for v in load_after)} (the machine is shared)",
        f"- Step: random batch of {args.batch_size} at {args.size}x{args.size} (3 channels, binary target), "
        "training mode, BCE, forward + backward + Adam (lr 1e-3); "
        f"{args.warmup} warm-up step(s), then {args.repeats} interleaved rounds of {args.steps} step(s) "
        "per configuration; images/s: median round (min-max) by the wall clock; CPU images/s: median round by "
        "the process's CPU time, which other processes on the machine disturb far less (with one thread: the "
        "speed of a step while it holds a core). The ratio line below is by CPU time, contiguous weights "
        "(`fit`'s default).",
        f"- BiX-Net's forward vs its pre-change forward, one step from the same state: logits, gradients and "
        f"BatchNorm statistics {'bit-identical' if same else 'differ'} (largest relative difference {worst:.1e}).",
        "",
        "| model | weights | images/s | min-max | CPU images/s | CPU / U-Net | conv | batch norm | pool / resize |"
        " optimizer | other |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in configs:
        split = splits[config]
        lines.append(
            f"| {config[0]} | {config[1]} | {median[config]:.2f} | {min(wall[config]):.2f}-{max(wall[config]):.2f} | "
            f"{cpu_median[config]:.2f} | {cpu_ratio[config]:.2f} | "
            + " | ".join(f"{split[g]:.0%}" for g in ("convolution", "batch norm", "pool / resize", "optimizer",
                                                      "other")) + " |"
        )
    lines += [
        "",
        f"bixnet/unet train images/s ratio: {cpu_ratio['bixnet', 'contiguous']:.2f}",
        "",
        f"- Same run, by CPU time: BiX-Net by its pre-change forward / U-Net {cpu_ratio[LEGACY, 'contiguous']:.2f}; "
        f"with channels_last weights (`fit(channels_last=True)`, rounding differs) BiX-Net / U-Net "
        f"{cpu_ratio['bixnet', 'channels_last']:.2f}, pre-change {cpu_ratio[LEGACY, 'channels_last']:.2f}.",
        f"- Same run, by the wall clock: BiX-Net / U-Net {ratio['bixnet', 'contiguous']:.2f}, pre-change "
        f"{ratio[LEGACY, 'contiguous']:.2f}; channels_last {ratio['bixnet', 'channels_last']:.2f}, pre-change "
        f"{ratio[LEGACY, 'channels_last']:.2f}.",
        "- Operator columns: share of the self CPU time of one profiled step (torch.profiler).",
    ]
    with atomic_write(args.out) as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(line for line in lines if line.startswith(("bixnet/unet", "- Same run"))))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
