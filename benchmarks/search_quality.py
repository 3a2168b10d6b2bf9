"""Search quality: does the BiX-NAS search find better networks than chance on real data?

Runs the whole BiX-NAS chain on MoNuSeg, retrains its winner, and compares it, under one retraining
recipe, with random genes of the same space (MACs-matched and unconstrained), NNI's
``RegularizedEvolution`` at the same search budget, and fixed references (BiO-Net++, the published
BiX-Net gene, U-Net). It also measures the supernet's ranking fidelity (the paper's fairness claim):
Kendall's tau between the shared-weight IoU of Phase 2's first population and the same members
retrained standalone, for fair vs naive SuperNet training and two ways of scoring members' BatchNorm.
The script writes ``benchmarks/results/search_quality.md`` and the raw ``search_quality.json``.

Notes
-----
Protocol (every setting is also written into the results file):

Data and recipe
    One fixed split (``split_seed=0``, ``val_fraction=0.2``, by tile: 6 MoNuSeg validation tiles = 24
    patches of 512 x 512). Every retraining of every arm is
    ``train_and_report(model, data, max_epochs=E, batch_size=4, patch_size=P, split_seed=0, seed=s,
    lr=1e-3)`` (``P``: seeded random training crop; validation on the full patches); the score is the
    best validation IoU (per-image mean) over the epochs and the Dice of that epoch.
Networks
    Searched and trained at width ``W`` (stem ``W``); params and MACs are counted at 1x3x512x512 at
    width ``W`` and at the paper's width 48 (stem 32; U-Net at base 32).
BiX-NAS
    ``BiXNAS`` with Phase 1 (``P1`` epochs), Phase 2 (``samples`` skip sets per stage, ``P2`` epochs per
    stage, keep (3, 2), ``lr_per_member=False``, ``keep_sequential_last=True``, ``member_bn``, and with
    ``--inherit-weights`` stages that start from the previous stage's SuperNet, the first from Phase 1's), then its
    own retraining of the winner with seeds 0, 1, 2 and the recipe. The search (Phase 1 + Phase 2) runs
    as one call without retraining, timed (wall ``time.perf_counter`` and CPU ``time.process_time``,
    per engine unit through ``add_unit_listener``); a second call on a copy of its state retrains.
    Its wall seconds are the search budget ``B``.
Random genes
    Samples of the full BiO-Net++ space, each block's ``SkipSubset.random`` with a ``RandomState``
    seeded by ``(seed, draw)``; one retraining each (seed 0). Unconstrained group: the first
    ``--random`` distinct draws. MACs-matched group: the first ``--random`` distinct draws whose MACs at
    width 48 lie within +-10 % of the BiX-NAS gene's (at most ``--max-draws`` draws).
RegularizedEvolution
    NNI's strategy (population 8, sample 3, mutation 0.2, seed) on the same full space, trials trained
    with the recipe for ``--re-epochs`` epochs, stopped by ``SequentialExecutionEngine(max_duration=B)``
    (the engine counts trial time; the trial running when ``B`` passes finishes). Its best trial is
    retrained with seeds 0, 1, 2.
Statistics
    Mean +- sample std over seeds (or genes). 3-seed arms: paired two-sided t-test against BiX-NAS's
    seeds (``scipy.stats.ttest_rel``, paired by seed); random groups (different genes, one seed each):
    Welch's two-sided t-test (``ttest_ind(equal_var=False)``) of BiX-NAS's 3 values vs the group's.
Ranking fidelity
    Phase 2's first stage (stage 5) population of the BiX-NAS run is trained again with
    ``phase2_stage_unit`` in ``mode='fair'`` (the BiX-NAS run's own stage, reused: same arguments, same
    run folder) and ``mode='naive'``, both from fresh weights (with ``--inherit-weights`` the search's own
    stage started from Phase 1's weights instead; its own scores are compared in a separate line). Each
    trained SuperNet (final weights) scores every member on the validation set with ``member_bn='batch'``
    and ``'recalibrate'`` (8 training batches of epoch 0 of
    ``SegDataModule(data, batch_size=4, patch_size=P, split_seed=0, seed=0)``); every member is
    retrained standalone (seed 0). Kendall's tau (``scipy.stats.kendalltau``) between shared-weight and
    standalone IoU, for the 4 combinations.

Every unit (a search, a retraining, a stage training, a scoring, the random draws, a MACs count)
caches its result as JSON under ``--work`` (atomic writes); a rerun skips finished units, and the
BiX-NAS chain and interrupted trainings resume from their own folders. RegularizedEvolution is not
resumable: an interrupted run starts again. The markdown is rewritten after every finished unit.

Examples
--------
Smoke run of the whole pipeline (minutes; synthetic data, tiny sizes, results under the work dir)::

    python benchmarks/search_quality.py --quick

The full run (MoNuSeg from ``../shared/data``; about an hour on 2 CPU cores)::

    python benchmarks/search_quality.py
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from numpy.random import RandomState

warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"nni\..*")
warnings.filterwarnings("ignore", message=r"`weights_only` was not set")

from nni.mutable.utils import label as nni_label  # noqa: E402
from nni.nas.execution import SequentialExecutionEngine  # noqa: E402
from nni.nas.execution.event import ModelEventType  # noqa: E402
from nni.nas.space import RawFormatModelSpace  # noqa: E402
from nni.nas.strategy import RegularizedEvolution  # noqa: E402

from nni_bixnas import create_model  # noqa: E402
from nni_bixnas.data import SegDataModule  # noqa: E402
from nni_bixnas.metrics import SegmentationMetrics  # noqa: E402
from nni_bixnas.profile import count_complexity  # noqa: E402
from nni_bixnas.space import BiONetPlusPlus, Gene, published_gene  # noqa: E402
from nni_bixnas.strategy import BiXNAS  # noqa: E402
from nni_bixnas.strategy.bixnas import STATE_FILE  # noqa: E402
from nni_bixnas.strategy.fair_step import evaluate_members, recalibrated_statistics  # noqa: E402
from nni_bixnas.strategy.runner import add_unit_listener  # noqa: E402
from nni_bixnas.strategy.spaces import narrow_space, space_reference  # noqa: E402
from nni_bixnas.strategy.units import phase2_stage_unit  # noqa: E402
from nni_bixnas.training import make_evaluator, train_and_report  # noqa: E402
from nni_bixnas.utils import atomic_write  # noqa: E402

# Phase 2 checkpoints written before Phase2Task kept its member labels as plain str hold NNI's ``label``
# (a str subclass), which Lightning's ``weights_only`` load refuses; allowing it keeps such caches usable.
# The class holds a string only.
torch.serialization.add_safe_globals([nni_label])

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/monuseg/MoNuSegTrainingData"
DEFAULT_WORK = ROOT / "runs" / "search_quality"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "search_quality.md"

#: Sizes of the full run and of ``--quick`` (only sizes differ; every code path is the same).
FULL = dict(data=None, width=8, epochs=12, phase1_epochs=10, phase2_epochs=3, samples=8, random=5, patch_size=128,
            re_epochs=3, re_budget=None, max_draws=200)
QUICK = dict(data="default:n=12,size=64", width=4, epochs=1, phase1_epochs=1, phase2_epochs=1, samples=4, random=2,
             patch_size=32, re_epochs=1, re_budget=30.0, max_draws=200)

BATCH_SIZE, SPLIT_SEED, VAL_FRACTION, LR = 4, 0, 0.2, 1e-3
SEEDS = [0, 1, 2]
KEEP = (3, 2)
ITERATIONS = 3  # BiO-Net++ default: stages 5 .. 1 are searched
RE_POPULATION, RE_SAMPLE, RE_MUTATION = 8, 3, 0.2
RECALIBRATION_BATCHES = 8
MACS_TOLERANCE = 0.10
PAPER_WIDTH, PAPER_STEM, PAPER_UNET_BASE = 48, 32, 32
MACS_SCREEN_SIZE = 64  # random draws are screened at 64x64 x (512/64)^2 (every counted op scales with H*W)


# ----- settings --------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sizes = "(default: full run %s, --quick %s)"
    p.add_argument("--quick", action="store_true", help="minutes-long smoke run of the whole pipeline")
    p.add_argument("--data", default=None, help="data spec or MoNuSeg folder " + sizes % (DEFAULT_DATA, QUICK["data"]))
    for name, help_ in [("width", "searched/trained width W (stem W)"), ("epochs", "retraining epochs E"),
                        ("phase1-epochs", "Phase 1 epochs"), ("phase2-epochs", "epochs per Phase 2 stage"),
                        ("samples", "Phase 2 skip sets per stage"), ("random", "random genes per group"),
                        ("patch-size", "training crop P"), ("re-epochs", "RegularizedEvolution trial epochs"),
                        ("max-draws", "bound on random draws for the MACs-matched group")]:
        key = name.replace("-", "_")
        p.add_argument(f"--{name}", type=int, default=None, help=f"{help_} " + sizes % (FULL[key], QUICK[key]))
    p.add_argument("--re-budget", type=float, default=None,
                   help="RegularizedEvolution wall budget in s "
                   + sizes % ("B = BiX-NAS search wall s", QUICK["re_budget"]))
    p.add_argument("--member-bn", default="batch", choices=["batch", "running", "recalibrate"],
                   help="Phase 2 member_bn of the BiX-NAS search (default batch)")
    p.add_argument("--inherit-weights", action="store_true",
                   help="Phase 2 stages start from the previous stage's SuperNet "
                   "(default: fresh weights, the authors')")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the searches and of the random draws (default 0)")
    p.add_argument("--work", default=None, help=f"cache and run folders (default {DEFAULT_WORK})")
    p.add_argument("--out", default=None, help=f"markdown result; the .json goes beside it (default {DEFAULT_OUT}, "
                                               "--quick: WORK/search_quality_quick.md)")
    p.add_argument("--verbose", action="store_true", help="keep the library logs (NNI, Lightning, nni_bixnas)")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every size left unset from :data:`FULL` or :data:`QUICK`, and locate the data and folders."""
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.data = resolve_data(args.data)
    args.work = Path(args.work) if args.work else DEFAULT_WORK
    default_out = args.work / "search_quality_quick.md" if args.quick else DEFAULT_OUT
    args.out = Path(args.out) if args.out else default_out
    return args


def resolve_data(data: Optional[str]) -> str:
    if data:
        return data if ":" in data or data == "default" else f"monuseg:{data}"
    if not DEFAULT_DATA.is_dir():
        raise SystemExit(f"search_quality: MoNuSeg not found at {DEFAULT_DATA}; pass --data monuseg:PATH (or --quick)")
    return f"monuseg:{DEFAULT_DATA}"


def recipe(s) -> Dict[str, Any]:
    """The one retraining recipe (:func:`train_and_report` arguments; ``seed`` and ``out_dir`` per unit)."""
    return dict(data=s.data, max_epochs=s.epochs, batch_size=BATCH_SIZE, patch_size=s.patch_size,
                split_seed=SPLIT_SEED, lr=LR)


def training(s) -> Dict[str, Any]:
    """Training settings of the search units (BiXNAS ``training``)."""
    return dict(data=s.data, batch_size=BATCH_SIZE, patch_size=s.patch_size, split_seed=SPLIT_SEED)


def digest(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and paths."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return str(value)


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


# ----- the unit cache ---------------------------------------------------------------------------------
class Units:
    """Run units once: each result is a JSON file ``work/units/<key>.json`` (atomic), reused on reruns."""

    def __init__(self, work: Path, on_finish: Callable[[], None]) -> None:
        self.dir = work / "units"
        self.on_finish = on_finish
        self.ran = 0
        self.cached = 0
        self.started = time.perf_counter()

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        path = self.dir / f"{key}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:8.1f} s] {message}", flush=True)

    def run(self, key: str, title: str, function: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        done = self.get(key)
        if done is not None:
            self.cached += 1
            self.log(f"cached {title}")
            return done
        self.log(f"start  {title}")
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        result["unit"] = {"key": key, "title": title, "wall_s": wall, "cpu_s": cpu, "finished": now()}
        with atomic_write(self.dir / f"{key}.json") as handle:
            json.dump(result, handle, indent=1, default=plain)
        self.ran += 1
        self.log(f"done   {title} ({wall:.1f} s wall, {cpu:.1f} s CPU)")
        self.on_finish()
        return self.get(key)


class Stopwatch:
    """Wall and CPU seconds of the BiX-NAS search per engine unit, summed over (resumed) attempts.

    ``mark(label)`` is called before every unit starts (``add_unit_listener``); a unit lasts until the
    next mark or the end. An attempt that died keeps its time up to its last mark (the interrupted
    unit's lost part is not counted; its resumed remainder is). Saved to ``path`` after every mark.
    """

    def __init__(self, path: Path, log: Callable[[str], None]) -> None:
        self.path = path
        self.log = log
        self.attempts: List[Dict[str, Any]] = json.loads(path.read_text())["attempts"] if path.is_file() else []
        self._wall0 = self._cpu0 = 0.0

    def _now(self) -> Dict[str, float]:
        return {"wall_s": time.perf_counter() - self._wall0, "cpu_s": time.process_time() - self._cpu0}

    def _save(self) -> None:
        with atomic_write(self.path) as handle:
            json.dump({"attempts": self.attempts}, handle, indent=1)

    def start(self) -> None:
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self.attempts.append({"started": now(), "marks": [], "end": None})
        self._save()

    def mark(self, label: str) -> None:
        self.attempts[-1]["marks"].append({"unit": label, **self._now()})
        self._save()
        self.log(f"  bixnas unit: {label}")

    def end(self) -> None:
        self.attempts[-1]["end"] = self._now()
        self._save()

    def summary(self) -> Dict[str, Any]:
        units: Dict[str, Dict[str, float]] = {}
        wall = cpu = 0.0
        for attempt in self.attempts:
            marks = attempt["marks"] + ([{"unit": None, **attempt["end"]}] if attempt["end"] else [])
            for this, following in zip(marks, marks[1:]):
                unit = units.setdefault(this["unit"], {"wall_s": 0.0, "cpu_s": 0.0})
                unit["wall_s"] += following["wall_s"] - this["wall_s"]
                unit["cpu_s"] += following["cpu_s"] - this["cpu_s"]
            if marks:
                wall, cpu = wall + marks[-1]["wall_s"], cpu + marks[-1]["cpu_s"]
        return {"wall_s": wall, "cpu_s": cpu, "attempts": len(self.attempts),
                "units": [{"unit": k, **v} for k, v in units.items()]}


# ----- networks ---------------------------------------------------------------------------------------
def registry_spec(name: str, **kwargs: Any) -> Dict[str, Any]:
    return {"kind": "registry", "name": name, "kwargs": kwargs}


def gene_spec(s, gene_text: str) -> Dict[str, Any]:
    return registry_spec("bixnet", gene=gene_text, width=s.width, stem_width=s.width)


def member_spec(s, candidates: Dict[str, List[int]], sample: Dict[str, List[int]]) -> Dict[str, Any]:
    """A Phase 2 member frozen from the narrowed space (members may fuse more inputs than the full space's max_k)."""
    return {"kind": "member", "width": s.width, "candidates": candidates, "sample": sample}


def build(spec: Dict[str, Any]) -> torch.nn.Module:
    if spec["kind"] == "registry":
        return create_model(spec["name"], **spec["kwargs"])
    space = BiONetPlusPlus(width=spec["width"], stem_width=spec["width"], candidates=spec["candidates"])
    return space.freeze(spec["sample"])


def paper_width(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The same network at the paper's width (48, stem 32; U-Net base 32)."""
    if spec["kind"] == "member":
        return registry_spec("bixnet", gene=Gene.from_sample(spec["sample"]).to_text(), width=PAPER_WIDTH,
                             stem_width=PAPER_STEM)
    if spec["name"] == "unet":
        return registry_spec("unet", **{**spec["kwargs"], "base": PAPER_UNET_BASE})
    return registry_spec(spec["name"], **{**spec["kwargs"], "width": PAPER_WIDTH, "stem_width": PAPER_STEM})


def reference_arms(s) -> List[Tuple[str, str, Dict[str, Any]]]:
    """``(arm id, row name, network)`` of the fixed references."""
    return [("bionet_pp", "BiO-Net++ (all skips)", registry_spec("bionet_pp", width=s.width, stem_width=s.width)),
            ("bixnet", "BiX-Net (published gene)", gene_spec(s, published_gene().to_text())),
            ("unet", "U-Net", registry_spec("unet", base=s.width))]


def complexity_key(spec: Dict[str, Any]) -> str:
    return f"complexity-{digest(spec)}"


def complexity(units: Units, spec: Dict[str, Any]) -> Dict[str, Any]:
    def count():
        c = count_complexity(build(spec).cpu(), input_size=(512, 512))
        return {"params": c.params, "macs": c.macs, "spec": spec}
    return units.run(complexity_key(spec), f"params/MACs of {spec_title(spec)}", count)


def spec_title(spec: Dict[str, Any]) -> str:
    if spec["kind"] == "member":
        return f"Phase 2 member (width {spec['width']})"
    width = spec["kwargs"].get("width", spec["kwargs"].get("base"))
    gene = f" gene {digest(spec['kwargs']['gene'])}" if "gene" in spec["kwargs"] else ""
    return f"{spec['name']}{gene} width {width}"


# ----- retraining (the one recipe) ---------------------------------------------------------------------
def retrain_key(s, spec: Dict[str, Any], seed: int) -> str:
    tag = spec["name"] if spec["kind"] == "registry" else "member"
    return f"retrain-{tag}-{digest(spec, recipe(s))}-s{seed}"


def retrain(units: Units, s, spec: Dict[str, Any], seed: int) -> Dict[str, Any]:
    key = retrain_key(s, spec, seed)

    def train():
        out_dir = s.work / "train" / key
        final = train_and_report(build(spec), seed=seed, out_dir=str(out_dir), **recipe(s))
        return {"final": final, "seed": seed, "spec": spec, "recipe": recipe(s), "out_dir": str(out_dir)}
    return units.run(key, f"retrain {spec_title(spec)} seed {seed}", train)


# ----- BiX-NAS ----------------------------------------------------------------------------------------
def search_id(s) -> str:
    inherit = ("inherit_weights",) if s.inherit_weights else ()  # absent by default: earlier caches stay valid
    return digest("bixnas", s.data, s.width, s.phase1_epochs, s.phase2_epochs, s.samples, KEEP, s.member_bn, s.seed,
                  s.patch_size, BATCH_SIZE, SPLIT_SEED, LR, *inherit)


def search_dir(s) -> Path:
    return s.work / f"bixnas-{search_id(s)}"


def bixnas_space(s) -> RawFormatModelSpace:
    return RawFormatModelSpace.from_model(BiONetPlusPlus(width=s.width, stem_width=s.width),
                                          make_evaluator(**recipe(s)))


def phase2_kwargs(s) -> Dict[str, Any]:
    return {"samples": s.samples, "epochs": s.phase2_epochs, "keep": KEEP, "lr_per_member": False,
            "keep_sequential_last": True, "member_bn": s.member_bn, "inherit_weights": s.inherit_weights}


def retrain_kwargs(s) -> Dict[str, Any]:
    return {"seeds": SEEDS, "max_epochs": s.epochs, "batch_size": BATCH_SIZE, "patch_size": s.patch_size,
            "split_seed": SPLIT_SEED, "lr": LR}


def bixnas_strategy(s, out_dir: Path, retrain: Optional[Dict[str, Any]]) -> BiXNAS:
    return BiXNAS(phase1={"epochs": s.phase1_epochs}, phase2=phase2_kwargs(s), retrain=retrain, training=training(s),
                  out_dir=str(out_dir), seed=s.seed)


def current_unit(strategy: BiXNAS) -> str:
    """What the chain is about to run (called before every unit)."""
    if strategy.phase1.result is None:
        return "Phase 1"
    if strategy.phase2 is None or not strategy.phase2.final_samples:
        done = 0 if strategy.phase2 is None else len(strategy.phase2.history)
        return f"Phase 2 stage {2 * ITERATIONS - 1 - done}"
    return f"retrain seed {strategy.retrain_kwargs['seeds'][len(strategy.retrained)]}"


def run_chain(s, strategy: BiXNAS, on_unit: Callable[[str], None]) -> Dict[str, Any]:
    engine = SequentialExecutionEngine()
    remove = add_unit_listener(engine, lambda: on_unit(current_unit(strategy)))
    try:
        strategy(bixnas_space(s), engine)
    finally:
        remove()
    return json.loads((Path(strategy.out_dir) / "result.json").read_text())


def bixnas_search(s, units: Units) -> Dict[str, Any]:
    """Phase 1 + Phase 2 (no retraining), timed per unit."""
    out = search_dir(s)
    clock = Stopwatch(out / "search_timing.json", units.log)
    strategy = bixnas_strategy(s, out, None)
    clock.start()
    result = run_chain(s, strategy, clock.mark)
    clock.end()
    return {"gene": result["genes"][0], "sample": result["final_samples"][0], "candidates": strategy.phase1.candidates,
            "phase1_iou": strategy.phase1.result.get("default"), "phase2_history": result["phase2_history"],
            "timing": clock.summary(), "out_dir": str(out), "phase1": {"epochs": s.phase1_epochs},
            "phase2": phase2_kwargs(s), "training": training(s), "seed": s.seed}


def bixnas_retrain(s, units: Units, search: Dict[str, Any]) -> Dict[str, Any]:
    """BiXNAS's own retraining of the winner, on a copy of the finished search's state (the search
    folder stays as it was, so another recipe retrains from the same search)."""
    out = search_dir(s) / f"retrain-{digest(retrain_kwargs(s), s.data)}"
    if not (out / STATE_FILE).is_file():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(search_dir(s) / STATE_FILE, out / STATE_FILE)
    result = run_chain(s, bixnas_strategy(s, out, retrain_kwargs(s)),
                       lambda label: units.log(f"  bixnas unit: {label}"))
    if result["genes"][0] != search["gene"]:
        raise RuntimeError(f"the resumed chain in {out} retrained another gene than the search found")
    return {"retrained": result["retrained"], "gene": search["gene"], "retrain": retrain_kwargs(s), "out_dir": str(out)}


# ----- random genes -----------------------------------------------------------------------------------
def draws_key(s, search: Dict[str, Any]) -> str:
    return f"random-draws-{digest(s.seed, s.random, s.max_draws, MACS_TOLERANCE, search['gene'], s.width)}"


def random_sample(space: BiONetPlusPlus, seed: int, draw: int) -> Dict[str, List[int]]:
    rs = RandomState([seed, draw])
    sample: Dict[str, List[int]] = {}
    for label, mutable in sorted(space.simplify().items()):
        mutable.random(sample, random_state=rs)  # SkipSubset.random: k ~ U{1..max_k}, then k of the candidates
    return sample


def screened_macs(gene_text: str) -> int:
    """MACs at width 48 and 512 x 512, counted at 64 x 64 and scaled by 64 (exact: see the check below)."""
    model = create_model("bixnet", gene=gene_text, width=PAPER_WIDTH, stem_width=PAPER_STEM)
    macs = count_complexity(model, input_size=(MACS_SCREEN_SIZE, MACS_SCREEN_SIZE)).macs
    return macs * (512 // MACS_SCREEN_SIZE) ** 2


def check_scaling(gene_text: str, screened: int) -> None:
    model = create_model("bixnet", gene=gene_text, width=PAPER_WIDTH, stem_width=PAPER_STEM)
    exact = count_complexity(model, input_size=(512, 512)).macs
    if exact != screened:
        raise RuntimeError(f"MACs at 64x64 x 64 ({screened}) differ from the count at 512x512 ({exact})")


def draw_random(s, search: Dict[str, Any]) -> Dict[str, Any]:
    target = count_complexity(create_model("bixnet", gene=search["gene"], width=PAPER_WIDTH, stem_width=PAPER_STEM),
                              input_size=(512, 512)).macs
    space = BiONetPlusPlus(width=s.width, stem_width=s.width)
    draws, matched = [], set()
    for draw in range(s.max_draws):
        text = Gene.from_sample(random_sample(space, s.seed, draw)).to_text()
        macs = screened_macs(text)
        if draw == 0:
            check_scaling(text, macs)
        within = abs(macs / target - 1.0) <= MACS_TOLERANCE
        draws.append({"draw": draw, "gene": text, "macs48": macs, "matched": within})
        matched |= {text} if within else set()
        if len({d["gene"] for d in draws}) >= s.random and len(matched) >= s.random:
            break
    return {"target_macs48": target, "tolerance": MACS_TOLERANCE, "draws": draws, "max_draws": s.max_draws,
            "reached": len(matched) >= s.random}


def random_groups(s, draws: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """``{'matched': [...], 'unconstrained': [...]}``: the first ``s.random`` distinct genes of each group."""
    def first(rows):
        seen, out = set(), []
        for row in rows:
            if row["gene"] not in seen and len(out) < s.random:
                seen.add(row["gene"])
                out.append(row)
        return out
    return {"matched": first(d for d in draws["draws"] if d["matched"]), "unconstrained": first(draws["draws"])}


# ----- RegularizedEvolution ---------------------------------------------------------------------------
def re_key(s, budget: float) -> str:
    key = digest(s.data, s.width, s.re_epochs, budget, s.seed, s.patch_size, RE_POPULATION, RE_SAMPLE, RE_MUTATION)
    return f"re-search-{key}"


def re_budget(s, search: Dict[str, Any]) -> float:
    return float(s.re_budget) if s.re_budget is not None else float(search["timing"]["wall_s"])


def run_re(s, units: Units, budget: float) -> Dict[str, Any]:
    """NNI's RegularizedEvolution on the full space until its trials have used ``budget`` wall seconds."""
    trials_dir = s.work / re_key(s, budget) / "trials"
    shutil.rmtree(trials_dir, ignore_errors=True)  # not resumable: an interrupted run starts again
    trials_dir.mkdir(parents=True)
    space = RawFormatModelSpace.from_model(BiONetPlusPlus(width=s.width, stem_width=s.width),
                                           make_evaluator(**{**recipe(s), "max_epochs": s.re_epochs}))
    strategy = RegularizedEvolution(population_size=RE_POPULATION, sample_size=RE_SAMPLE, mutation_prob=RE_MUTATION,
                                    seed=s.seed)
    engine = SequentialExecutionEngine(max_duration=budget)
    engine.register_model_event_callback(
        ModelEventType.TrainingEnd, lambda event: units.log(f"  RE trial {len(list(engine.list_models()))}: "
                                                            f"IoU {event.model.metric}"))
    previous, tempfile.tempdir = tempfile.tempdir, str(trials_dir)  # train_and_report's run folders go here
    try:
        strategy(space, engine)
    finally:
        tempfile.tempdir = previous
    trials = [{"sample": m.sample, "iou": m.metric, "status": m.status.value} for m in engine.list_models()]
    scored = [t for t in trials if isinstance(t["iou"], (int, float)) and math.isfinite(t["iou"])]
    best = max(scored, key=lambda t: t["iou"])
    return {"budget_s": budget, "engine_trial_s": engine.state_dict()["total_duration"], "trials": trials,
            "best": {**best, "gene": Gene.from_sample(best["sample"]).to_text()}, "trial_epochs": s.re_epochs,
            "population_size": RE_POPULATION, "sample_size": RE_SAMPLE, "mutation_prob": RE_MUTATION, "seed": s.seed}


# ----- ranking fidelity -------------------------------------------------------------------------------
def first_stage(search: Dict[str, Any]) -> Dict[str, Any]:
    return next(h for h in search["phase2_history"] if h["population"])


def fidelity_members(search: Dict[str, Any]) -> List[Dict[str, List[int]]]:
    return [p["sample"] for p in first_stage(search)["population"]]


def stage_kwargs(s, search: Dict[str, Any], mode: str) -> Dict[str, Any]:
    """``phase2_stage_unit`` arguments of the BiX-NAS run's first stage, in ``mode``. For 'fair' these are
    the chain's own arguments and run folder (``ProgressiveEvolution._run``), so its trained stage is reused."""
    candidates = search["candidates"]
    out_dir = Path(search["out_dir"]) / "phase2" if mode == "fair" else s.work / f"fidelity-{search_id(s)}"
    return dict(space=space_reference(narrow_space(bixnas_space(s), candidates)), stage=first_stage(search)["stage"],
                members=fidelity_members(search), candidates=candidates, epochs=s.phase2_epochs, milestones=None,
                gamma=0.1, lr=LR, step="low_memory", mode=mode, member_bn=s.member_bn,
                recalibration_batches=RECALIBRATION_BATCHES, macs_input_size=[512, 512], init_weights=None,
                out_dir=str(out_dir), data=s.data, batch_size=BATCH_SIZE, split_seed=SPLIT_SEED,
                patch_size=s.patch_size)


def stage_key(s, mode: str) -> str:
    return f"fidelity-train-{mode}-{search_id(s)}"


def train_stage(s, search: Dict[str, Any], mode: str) -> Dict[str, Any]:
    result = phase2_stage_unit(**stage_kwargs(s, search, mode))
    searched = [p["iou"] for p in first_stage(search)["population"]]
    ious = [p["iou"] for p in result["population"]]
    return {"mode": mode, "stage": result["stage"], "population": result["population"], "weights": result["weights"],
            "same_scores_as_search": ious == searched}


def recalibration_batches(module: SegDataModule) -> List[torch.Tensor]:
    batches = []
    for images, _ in module.train_dataloader(epoch=0):
        batches.append(images)
        if len(batches) == RECALIBRATION_BATCHES:
            break
    return batches


def loaded_supernet(s, search: Dict[str, Any], weights: str) -> BiONetPlusPlus:
    model = BiONetPlusPlus(width=s.width, stem_width=s.width, candidates=search["candidates"])
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


@torch.no_grad()
def score_members(s, search: Dict[str, Any], trained: Dict[str, Any], member_bn: str) -> Dict[str, Any]:
    """Every member's validation IoU/Dice on the trained SuperNet, as ``Phase2Task.validation_step`` scores."""
    model = loaded_supernet(s, search, trained["weights"])
    members, stage = fidelity_members(search), trained["stage"]
    module = SegDataModule(data=s.data, batch_size=BATCH_SIZE, patch_size=s.patch_size, split_seed=SPLIT_SEED, seed=0)
    module.setup("fit")
    batches = recalibration_batches(module) if member_bn == "recalibrate" else []
    statistics_ = [recalibrated_statistics(model, batches, stage, m) for m in members] if batches else None
    metrics = [SegmentationMetrics(num_classes=int(module.info.num_classes)) for _ in members]
    for images, target in module.val_dataloader():
        for metric, logits in zip(metrics, evaluate_members(model, images, stage, members, member_bn, statistics_)):
            metric.update(logits.float(), target)
    scores = [m.compute() for m in metrics]
    return {"mode": trained["mode"], "member_bn": member_bn, "iou": [float(x["iou"]) for x in scores],
            "dice": [float(x["dice"]) for x in scores], "recalibration_batches": len(batches)}


def score_key(s, mode: str, member_bn: str) -> str:
    return f"fidelity-score-{mode}-{member_bn}-{search_id(s)}"


def fidelity(units: Units, s, search: Dict[str, Any]) -> None:
    for mode in ("fair", "naive"):
        trained = units.run(stage_key(s, mode), f"fidelity: train stage SuperNet ({mode})",
                            lambda: train_stage(s, search, mode))
        for member_bn in ("batch", "recalibrate"):
            units.run(score_key(s, mode, member_bn), f"fidelity: score members ({mode}, {member_bn})",
                      lambda: score_members(s, search, trained, member_bn))
    for member in fidelity_members(search):
        retrain(units, s, member_spec(s, search["candidates"], member), 0)


# ----- the pipeline -----------------------------------------------------------------------------------
def run_all(s, units: Units) -> None:
    """Every unit, in order; finished ones are read from the cache."""
    search = units.run(f"bixnas-search-{search_id(s)}", "BiX-NAS search (Phase 1 + Phase 2)",
                       lambda: bixnas_search(s, units))
    both_widths(units, gene_spec(s, search["gene"]))
    units.run(bixnas_retrain_key(s), "BiX-NAS retraining of the winner (seeds 0 1 2)",
              lambda: bixnas_retrain(s, units, search))
    for _, _, spec in reference_arms(s):
        both_widths(units, spec)
        for seed in SEEDS:
            retrain(units, s, spec, seed)
    draws = units.run(draws_key(s, search), "random gene draws", lambda: draw_random(s, search))
    for group in random_groups(s, draws).values():
        for row in group:
            retrain(units, s, gene_spec(s, row["gene"]), 0)
    budget = re_budget(s, search)
    evolution = units.run(re_key(s, budget), f"RegularizedEvolution ({budget:.0f} s budget)",
                          lambda: run_re(s, units, budget))
    both_widths(units, gene_spec(s, evolution["best"]["gene"]))
    for seed in SEEDS:
        retrain(units, s, gene_spec(s, evolution["best"]["gene"]), seed)
    fidelity(units, s, search)


def both_widths(units: Units, spec: Dict[str, Any]) -> None:
    complexity(units, spec)
    complexity(units, paper_width(spec))


def bixnas_retrain_key(s) -> str:
    return f"bixnas-retrain-{search_id(s)}-{digest(retrain_kwargs(s), s.data)}"


# ----- statistics ---------------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "pending"
    std = f"{statistics.stdev(values):.4f}" if len(values) > 1 else "—"
    return f"{statistics.mean(values):.4f} ± {std}"


def p_value(test: str, bix: Dict[int, float], other: Dict[int, float]) -> Optional[float]:
    """Two-sided p of ``'paired'`` (by seed, ``ttest_rel``) or ``'welch'`` (``ttest_ind(equal_var=False)``)."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if test == "paired":
            seeds = sorted(set(bix) & set(other))
            if len(seeds) < 2:
                return None
            return float(stats.ttest_rel([bix[k] for k in seeds], [other[k] for k in seeds]).pvalue)
        if len(bix) < 2 or len(other) < 2:
            return None
        return float(stats.ttest_ind(list(bix.values()), list(other.values()), equal_var=False).pvalue)


def kendall(x: Sequence[float], y: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    from scipy import stats

    if len(x) < 2 or len(x) != len(y):
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def num(value: Optional[float], digits: int = 4) -> str:
    if value is None:
        return "pending"
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"


def yes_no(flag: Optional[bool]) -> str:
    return "pending" if flag is None else ("yes" if flag else "no")


# ----- the report ---------------------------------------------------------------------------------------
class Report:
    """Builds the markdown and JSON from whatever units have finished (missing ones read 'pending')."""

    def __init__(self, s, units: Units, command: str, started: str) -> None:
        self.s, self.units, self.command, self.started = s, units, command, started
        self.start_load = load_average()
        self.pending: List[str] = []
        self.used: Dict[str, Any] = {}
        self.summary: Dict[str, Any] = {}

    def need(self, key: str, title: str) -> Optional[Dict[str, Any]]:
        result = self.units.get(key)
        if result is None:
            self.pending.append(title)
        else:
            self.used[key] = result
        return result

    # -- arms -----------------------------------------------------------------------------------------
    def seed_results(self, spec: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
        out = {}
        for seed in SEEDS:
            done = self.need(retrain_key(self.s, spec, seed), f"retrain {spec_title(spec)} seed {seed}")
            if done is not None:
                out[seed] = done["final"]
        return out

    def bixnas(self) -> Tuple[Optional[Dict[str, Any]], Dict[int, Dict[str, Any]]]:
        search = self.need(f"bixnas-search-{search_id(self.s)}", "BiX-NAS search")
        done = self.need(bixnas_retrain_key(self.s), "BiX-NAS retraining") if search else None
        finals = {r["seed"]: r for r in done["retrained"]} if done else {}
        if search is None:
            self.pending.append("everything that depends on the BiX-NAS search")
        return search, finals

    def macs(self, spec: Dict[str, Any]) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
        return (self.need(complexity_key(spec), f"complexity {spec_title(spec)}"),
                self.need(complexity_key(paper_width(spec)), f"complexity {spec_title(paper_width(spec))}"))

    def arm_row(self, name: str, network: str, spec: Optional[Dict[str, Any]], finals: Dict[int, Dict[str, Any]],
                test: str, bix: Dict[int, float], cost: str = "— | —") -> str:
        small, paper = self.macs(spec) if spec else (None, None)
        ious = {k: v["default"] for k, v in finals.items()}
        p = "—" if test == "—" else num(p_value(test, bix, ious), 3)
        self.summary.setdefault("arms", {})[name] = {"iou": ious, "dice": {k: v["dice"] for k, v in finals.items()},
                                                    "complexity_w": small, "complexity_48": paper, "test": test}
        return (f"| {name} | {network} | {len(finals)}/{len(SEEDS)} seeds | {cplx(small)} | {cplx(paper)} "
                f"| {mean_std(list(ious.values()))} | {mean_std([v['dice'] for v in finals.values()])} "
                f"| {test_name(test)} | {p} | {cost} |")

    def group_row(self, name: str, rows: List[Dict[str, Any]], bix: Dict[int, float]) -> str:
        finals = [self.need(retrain_key(self.s, gene_spec(self.s, r["gene"]), 0), f"retrain random gene {r['draw']}")
                  for r in rows]
        ious = [f["final"]["default"] for f in finals if f]
        p = num(p_value("welch", bix, dict(enumerate(ious))), 3)
        best = f"; max {max(ious):.4f}" if ious else ""
        self.summary.setdefault("arms", {})[name] = {"iou": ious, "macs48": [r["macs48"] for r in rows],
                                                    "test": "welch", "genes": len(rows),
                                                    "complete": len(ious) == len(rows)}
        small = span([f["final"]["macs"] for f in finals if f]) if len(ious) == len(rows) else "pending"
        return (f"| {name} | {len(rows)} random genes | {len(ious)}/{len(rows)} genes (seed 0) | GMACs {small} "
                f"| GMACs {span([r['macs48'] for r in rows])} | {mean_std(ious)}{best} "
                f"| {mean_std([f['final']['dice'] for f in finals if f])} | {test_name('welch')} | {p} | — | — |")

    def arms(self, search, bix_finals) -> List[str]:
        s = self.s
        bix = {k: v["default"] for k, v in bix_finals.items()}
        lines = ["## Arms", "",
                 f"Val IoU / Dice: best epoch of {s.epochs}-epoch retrainings (mean ± sample std over seeds or genes). "
                 "Params (M) / GMACs at 1x3x512x512, at width W and at the paper's width 48.", "",
                 f"| arm | network | done | params M / GMACs @W={s.width} | params M / GMACs @48 | val IoU | val Dice "
                 "| test vs BiX-NAS | p | search wall s | search CPU s |",
                 "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
        timing = search["timing"] if search else None
        cost = f"{timing['wall_s']:.0f} | {timing['cpu_s']:.0f}" if timing else "pending | pending"
        bix_spec = gene_spec(s, search["gene"]) if search else None
        network = f"searched gene {digest(search['gene'])}" if search else "pending"
        lines.append(self.arm_row("BiX-NAS", network, bix_spec, bix_finals, "—", bix, cost))
        lines += self.random_rows(search, bix)
        lines.append(self.re_row(search, bix))
        for _, name, spec in reference_arms(s):
            lines.append(self.arm_row(name, spec["name"], spec, self.seed_results(spec), "paired", bix))
        return lines + [""]

    def random_rows(self, search, bix) -> List[str]:
        draws = self.need(draws_key(self.s, search), "random gene draws") if search else None
        if draws is None:
            return [f"| Random, {g} | pending | | | | | | {test_name('welch')} | | — | — |"
                    for g in ("MACs-matched ±10 %", "unconstrained")]
        groups = random_groups(self.s, draws)
        return [self.group_row("Random, MACs-matched ±10 %", groups["matched"], bix),
                self.group_row("Random, unconstrained", groups["unconstrained"], bix)]

    def evolution(self, search) -> Optional[Dict[str, Any]]:
        if search is None:
            return None
        return self.need(re_key(self.s, re_budget(self.s, search)), "RegularizedEvolution search")

    def re_row(self, search, bix) -> str:
        evolution = self.evolution(search)
        if evolution is None:
            return (f"| RegularizedEvolution (best trial) | pending | | | | | | {test_name('paired')} "
                    "| | pending | pending |")
        unit = evolution["unit"]
        spec = gene_spec(self.s, evolution["best"]["gene"])
        return self.arm_row("RegularizedEvolution (best trial)", f"best of {len(evolution['trials'])} trials", spec,
                            self.seed_results(spec), "paired", bix, f"{unit['wall_s']:.0f} | {unit['cpu_s']:.0f}")

    # -- details --------------------------------------------------------------------------------------
    def random_table(self, search) -> List[str]:
        draws = self.units.get(draws_key(self.s, search)) if search else None
        if draws is None:
            return []
        groups = random_groups(self.s, draws)
        lines = ["## Random genes", "",
                 f"{len(draws['draws'])} draw(s) (bound {draws['max_draws']}); BiX-NAS gene: "
                 f"{draws['target_macs48'] / 1e9:.3f} GMACs at width 48; MACs-matched = within "
                 f"±{draws['tolerance'] * 100:.0f} %: {'reached' if draws['reached'] else 'NOT reached'} "
                 f"({len(groups['matched'])} of {self.s.random}). A gene in both groups is trained once.", "",
                 f"| group | draw | gene id | GMACs @W={self.s.width} | GMACs @48 | ratio to BiX-NAS @48 "
                 "| val IoU | val Dice |",
                 "|---|---:|---|---:|---:|---:|---:|---:|"]
        for group, rows in groups.items():
            for r in rows:
                done = self.units.get(retrain_key(self.s, gene_spec(self.s, r["gene"]), 0))
                final = done["final"] if done else {}
                small = f"{final['macs'] / 1e9:.3f}" if final else "pending"
                lines.append(f"| {group} | {r['draw']} | {digest(r['gene'])} | {small} | {r['macs48'] / 1e9:.3f} "
                             f"| {r['macs48'] / draws['target_macs48']:.3f} | {num(final.get('default'))} "
                             f"| {num(final.get('dice'))} |")
        return lines + [""]

    def search_details(self, search) -> List[str]:
        if search is None:
            return []
        t = search["timing"]
        lines = ["## BiX-NAS search", "",
                 f"Search budget B = {t['wall_s']:.1f} s wall, {t['cpu_s']:.1f} s CPU (`time.perf_counter` / "
                 f"`time.process_time` of this process, from the chain's start to its end, {t['attempts']} attempt(s); "
                 "per unit from one `add_unit_listener` mark to the next).", "",
                 f"Phase 1 best val IoU (selection-matrix SuperNet): {num(search['phase1_iou'])}. "
                 f"Candidates per block: {sum(len(v) for v in search['candidates'].values())} inputs over "
                 f"{len(search['candidates'])} blocks.", "",
                 "| unit | members | kept | best / mean member IoU (shared weights) | wall s | CPU s |",
                 "|---|---:|---:|---:|---:|---:|"]
        by_unit = {u["unit"]: u for u in t["units"]}
        lines.append(unit_line("Phase 1", by_unit, "—", "—", "—"))
        for h in search["phase2_history"]:
            ious = [p["iou"] for p in h["population"]]
            score = f"{max(ious):.4f} / {statistics.mean(ious):.4f}" if ious else "—"
            lines.append(unit_line(f"Phase 2 stage {h['stage']}", by_unit, len(ious), len(h["kept"]), score))
        lines += ["", "Winner gene (text format):", "", "```", search["gene"].rstrip(), "```", ""]
        return lines

    def re_details(self, search) -> List[str]:
        evolution = self.units.get(re_key(self.s, re_budget(self.s, search))) if search else None
        if evolution is None:
            return []
        ious = [t["iou"] for t in evolution["trials"] if isinstance(t["iou"], (int, float))]
        return ["## RegularizedEvolution", "",
                f"Budget {evolution['budget_s']:.1f} s; the engine counted {evolution['engine_trial_s']:.1f} s "
                f"of trials (the trial running when the budget passed finished); {len(evolution['trials'])} trials of "
                f"{evolution['trial_epochs']} epoch(s), population {evolution['population_size']}, sample "
                f"{evolution['sample_size']}, mutation {evolution['mutation_prob']}, seed {evolution['seed']}; "
                f"trial IoU max {max(ious):.4f}, mean {statistics.mean(ious):.4f}. Best trial gene id "
                f"{digest(evolution['best']['gene'])}, retrained with seeds {SEEDS}. The number of trials depends "
                "on the machine's speed and load (a wall budget), so this arm is not bit-reproducible.", ""]

    def fidelity_table(self, search) -> List[str]:
        lines = ["## Supernet ranking fidelity", ""]
        if search is None:
            return lines + ["pending", ""]
        members = fidelity_members(search)
        specs = [member_spec(self.s, search["candidates"], m) for m in members]
        standalone = [self.need(retrain_key(self.s, spec, 0), f"standalone member {i}") for i, spec in enumerate(specs)]
        alone = [r["final"]["default"] if r else None for r in standalone]
        scores, trained = {}, {}
        for mode in ("fair", "naive"):
            trained[mode] = self.need(stage_key(self.s, mode), f"fidelity training {mode}")
            for bn in ("batch", "recalibrate"):
                scores[mode, bn] = self.need(score_key(self.s, mode, bn), f"fidelity scoring {mode} {bn}")
        lines += self.fidelity_intro(search, trained)
        lines += self.member_rows(search, alone, scores)
        lines += self.tau_rows(alone, scores, [p["iou"] for p in first_stage(search)["population"]])
        return lines

    def fidelity_intro(self, search, trained) -> List[str]:
        fair = trained.get("fair")
        reused = "pending" if fair is None else ("yes" if fair["same_scores_as_search"] else "no (trained again)")
        return [f"Stage {first_stage(search)['stage']} population of the BiX-NAS run ({len(fidelity_members(search))} "
                f"members), SuperNets trained {self.s.phase2_epochs} epoch(s) (`phase2_stage_unit`, lr {LR}). "
                f"'fair' reuses the BiX-NAS run's own stage (same arguments and run folder; scores identical to the "
                f"search's: {reused}). Shared-weight IoU: final SuperNet weights on the validation set; 'batch' = "
                f"each batch's own BatchNorm statistics, 'recalibrate' = per-member statistics from "
                f"{RECALIBRATION_BATCHES} training batches (epoch-0 crops, seed 0). Standalone: the member retrained "
                f"with the recipe, seed 0.", ""]

    def member_rows(self, search, alone, scores) -> List[str]:
        population = first_stage(search)["population"]
        lines = ["| member | GMACs @W (512²) | standalone IoU | fair/batch | fair/recalibrate | naive/batch "
                 "| naive/recalibrate | search score (best epoch) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for i, member in enumerate(population):
            cells = [num(scores[c]["iou"][i]) if scores[c] else "pending" for c in
                     [("fair", "batch"), ("fair", "recalibrate"), ("naive", "batch"), ("naive", "recalibrate")]]
            lines.append(f"| {i} | {member['macs'] / 1e9:.3f} | {num(alone[i])} | {' | '.join(cells)} "
                         f"| {member['iou']:.4f} |")
        return lines + [""]

    def tau_rows(self, alone, scores, searched: List[float]) -> List[str]:
        lines = ["| SuperNet training | member_bn | Kendall tau | p | n |", "|---|---|---:|---:|---:|"]
        taus = {}
        for (mode, bn), score in scores.items():
            ready = score is not None and None not in alone
            tau, p = kendall(score["iou"], alone) if ready else (None, None)
            taus[mode, bn] = tau
            lines.append(f"| {mode} | {bn} | {num(tau, 3)} | {num(p, 3)} | {len(alone)} |")
        own, own_p = kendall(searched, alone) if None not in alone else (None, None)
        self.summary["fidelity"] = {**{f"{m}/{b}": t for (m, b), t in taus.items()}, "search_score": own}
        lines += ["", f"- the search's own stage score (fair, best epoch, member_bn={self.s.member_bn}) vs standalone: "
                      f"Kendall tau {num(own, 3)}, p {num(own_p, 3)}"]
        for mode in ("fair", "naive"):
            lines.append(f"- {mode} SuperNet: member_bn with the higher Kendall tau: "
                         f"{higher(taus[mode, 'batch'], taus[mode, 'recalibrate'])}")
        return lines + [""]

    # -- targets and page -----------------------------------------------------------------------------
    def targets(self) -> List[str]:
        arms = self.summary.get("arms", {})
        bix = list(arms.get("BiX-NAS", {}).get("iou", {}).values())
        group = arms.get("Random, MACs-matched ±10 %", {})
        matched = group.get("iou", []) if group.get("complete") else []
        dense = list(arms.get("BiO-Net++ (all skips)", {}).get("iou", {}).values())
        bix_macs = (arms.get("BiX-NAS", {}).get("complexity_48") or {}).get("macs")
        dense_macs = (arms.get("BiO-Net++ (all skips)", {}).get("complexity_48") or {}).get("macs")
        full = len(bix) == len(SEEDS)
        beat = bool(statistics.mean(bix) >= max(matched)) if full and matched else None
        no_match = group.get("genes") == 0
        delta = statistics.mean(bix) - statistics.mean(dense) if full and len(dense) == len(SEEDS) else None
        close = None if delta is None else abs(delta) <= 0.01
        cheap = None if not (bix_macs and dense_macs) else bix_macs <= 0.85 * dense_macs
        self.summary["targets"] = {"beats_best_matched_random": beat, "within_1_point_of_bionet_pp": close,
                                   "iou_delta_vs_bionet_pp": delta, "macs_le_85pct_of_bionet_pp": cheap}
        ratio = f" (ratio {bix_macs / dense_macs:.3f})" if cheap is not None else ""
        return ["## Targets", "",
                f"- BiX-NAS mean IoU >= best MACs-matched random gene: "
                f"{'n/a (no MACs-matched gene drawn)' if no_match else yes_no(beat)}"
                + ("" if beat is None else f" ({statistics.mean(bix):.4f} vs {max(matched):.4f})"),
                f"- within 1 point of BiO-Net++: {yes_no(close)}"
                + ("" if delta is None else f" (Δ IoU = {delta * 100:+.2f} points, |Δ| <= 1)"),
                f"- MACs <= 85% of BiO-Net++ at width 48: {yes_no(cheap)}{ratio}", ""]

    def header(self) -> List[str]:
        s = self.s
        status = ("**Run complete.**" if not self.pending else
                  f"**Partial run**: {len(self.pending)} unit(s) pending (rows say 'pending'); "
                  "rerun the command to continue.")
        return ["# Search quality: BiX-NAS vs chance", "", status, "",
                f"- command: `{self.command}`",
                f"- date: started {self.started}, this file written {now()}",
                f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
                f"{torch.get_num_threads()} thread(s) (`--threads {s.threads}`), Python {platform.python_version()}; "
                f"load average (1/5/15 min) {self.start_load} at this invocation's start, {load_average()} now "
                "(the machine may be shared: wall times grow with its load)",
                f"- cost: finished units took {self.unit_seconds('wall_s'):.0f} s wall, "
                f"{self.unit_seconds('cpu_s'):.0f} s CPU in all (summed over units and invocations)",
                f"- data `{s.data}`, split_seed {SPLIT_SEED}, val_fraction {VAL_FRACTION} (by tile), "
                "full validation patches",
                f"- recipe (every retraining): `train_and_report(model, max_epochs={s.epochs}, "
                f"batch_size={BATCH_SIZE}, patch_size={s.patch_size}, split_seed={SPLIT_SEED}, lr={LR}, seed=s)`; "
                f"width W = {s.width} (stem {s.width})",
                f"- BiX-NAS: Phase 1 {s.phase1_epochs} epochs; Phase 2 {phase2_kwargs(s)}; "
                f"retraining seeds {SEEDS}; seed {s.seed}",
                f"- random genes: {s.random} per group, seed 0 retraining; "
                f"RegularizedEvolution: population {RE_POPULATION}, "
                f"sample {RE_SAMPLE}, mutation {RE_MUTATION}, trial epochs {s.re_epochs}, budget "
                f"{'B (BiX-NAS search wall s)' if s.re_budget is None else f'{s.re_budget:g} s'}"
                f"{' — `--quick` smoke sizes, not a result' if s.quick else ''}",
                "- tests: 3-seed arms paired two-sided t-test by seed (`ttest_rel`) vs BiX-NAS; random groups Welch's "
                "two-sided t-test (`ttest_ind(equal_var=False)`) of BiX-NAS's 3 values vs the group's", ""]

    def unit_seconds(self, kind: str) -> float:
        return sum(u["unit"][kind] for u in self.used.values() if "unit" in u)

    def build(self) -> Tuple[str, Dict[str, Any]]:
        self.pending, self.used, self.summary = [], {}, {}
        search, bix_finals = self.bixnas()
        body = self.arms(search, bix_finals) + self.targets() + self.random_table(search) + self.re_details(search)
        body += self.fidelity_table(search) + self.search_details(search)
        text = "\n".join(self.header() + body) + "\n"
        raw = {"command": self.command, "started": self.started, "written": now(), "complete": not self.pending,
               "pending": self.pending, "settings": settings_dict(self.s), "summary": self.summary, "units": self.used}
        return text, raw

    def write(self) -> None:
        text, raw = self.build()
        with atomic_write(self.s.out) as handle:
            handle.write(text)
        with atomic_write(self.s.out.with_suffix(".json")) as handle:
            json.dump(raw, handle, indent=1, default=plain)


def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def span(values: Sequence[float]) -> str:
    return f"{min(values) / 1e9:.3f}–{max(values) / 1e9:.3f}" if values else "—"


def cplx(result: Optional[Dict[str, Any]]) -> str:
    return "pending" if result is None else f"{result['params'] / 1e6:.4f} / {result['macs'] / 1e9:.3f}"


def test_name(test: str) -> str:
    return {"paired": "paired t (by seed)", "welch": "Welch t", "—": "—"}[test]


def unit_line(label: str, by_unit: Dict[str, Dict[str, float]], members, kept, score) -> str:
    unit = by_unit.get(label)
    cost = f"{unit['wall_s']:.1f} | {unit['cpu_s']:.1f}" if unit else "— | —"
    return f"| {label} | {members} | {kept} | {score} | {cost} |"


def higher(batch: Optional[float], recalibrate: Optional[float]) -> str:
    if batch is None or recalibrate is None:
        return "pending"
    if math.isnan(batch) or math.isnan(recalibrate):
        return f"undetermined (tau batch {num(batch, 3)}, recalibrate {num(recalibrate, 3)})"
    if batch == recalibrate:
        return f"tie ({batch:.3f})"
    name = "batch" if batch > recalibrate else "recalibrate"
    return f"{name} (tau batch {batch:.3f} vs recalibrate {recalibrate:.3f})"


def settings_dict(s) -> Dict[str, Any]:
    keys = ["quick", "data", "width", "epochs", "phase1_epochs", "phase2_epochs", "samples", "random", "patch_size",
            "re_epochs", "re_budget", "max_draws", "member_bn", "inherit_weights", "threads", "seed"]
    return {**{k: getattr(s, k) for k in keys}, "work": str(s.work), "out": str(s.out), "batch_size": BATCH_SIZE,
            "split_seed": SPLIT_SEED, "val_fraction": VAL_FRACTION, "lr": LR, "seeds": SEEDS, "keep": KEEP,
            "re_population": RE_POPULATION, "re_sample": RE_SAMPLE, "re_mutation": RE_MUTATION,
            "recalibration_batches": RECALIBRATION_BATCHES, "macs_tolerance": MACS_TOLERANCE}


def quiet(verbose: bool) -> None:
    if not verbose:
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # Lightning's own deprecation, once per training
        for name in ("nni", "nni_bixnas"):
            logging.getLogger(name).setLevel(logging.WARNING)
        for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    s = resolve(parse_args(argv))
    quiet(s.verbose)
    torch.set_num_threads(s.threads)
    command = "python benchmarks/search_quality.py " + shlex.join(argv)
    report: Optional[Report] = None
    units = Units(s.work, lambda: report.write())
    report = Report(s, units, command, now())
    report.write()
    units.log(f"work {s.work}, results {s.out}")
    run_all(s, units)
    report.write()
    units.log(f"units: {units.ran} run, {units.cached} cached; {'complete' if not report.pending else 'INCOMPLETE'}; "
              f"wrote {s.out} and {s.out.with_suffix('.json')}")
    return 0 if not report.pending else 1


if __name__ == "__main__":
    sys.exit(main())
