"""Search quality: is BiX-NAS worth choosing over NNI's own strategies, on test tiles no arm selected on?

Every arm searches (or draws) on the same data, is selected on the validation tiles, is retrained with one
recipe and several seeds, and is reported on held-out test tiles, as it falls. The script writes
``benchmarks/results/search_quality.md`` and the raw ``search_quality.json`` beside it.

Notes
-----
Protocol (every setting is also written into the results file):

Split
    The 30 MoNuSeg training tiles are split by tile, fixed by ``--split-seed``: ``--test-fraction`` of them
    (6) are the test set, linked into a folder of their own that no search or selection reads; the other 24
    are split by :class:`~nni_bixnas.data.SegDataModule` into train (18) and validation (6), with
    ``val_fraction=0.25`` and the same seed. The tile names are written in the results.
Recipe
    Every retraining is ``train_and_report(model, max_epochs=E, batch_size=4, patch_size=P,
    split_seed, val_fraction=0.25, lr=1e-3, seed=r)``; the **final-epoch** checkpoint (``last.ckpt``, not
    the best validation epoch, which after a few epochs can be the all-foreground first one) is scored on
    the validation tiles and on the test tiles (``evaluate``: full 512 x 512 patches, per-image IoU).
Arms, for every search seed ``k`` (``--search-seeds``)
    BiX-NAS: ``BiXNAS`` Phase 1 + Phase 2 (``selection`` as given, ``keep_sequential_last``, recalibrated
    member BatchNorm, the stages inheriting weights), timed: its wall seconds ``B_k`` are the budget of the
    other searching arms of seed ``k`` in the same invocation (never a cached budget of another run).
    RegularizedEvolution: NNI's strategy on the full space, trials trained ``--re-epochs`` epochs, stopped by
    ``SequentialExecutionEngine(max_duration=B_k)``; its best trial (validation IoU) is the pick.
    Random search with weight sharing (RS-WS), the one-shot ablation: Phase 2 replaced by random members of
    the Phase-1-narrowed space (the sampler BiX-NAS uses, ``keep_sequential_last``) scored on Phase 1's
    trained SuperNet (recalibrated BatchNorm, validation tiles) until ``B_k`` minus Phase 1's wall seconds
    is spent; the best is the pick. Each pick is retrained with ``--retrain-seeds``.
Arms without search
    Random nets, one retraining each: ``--random`` draws of the Phase-1-narrowed space of search seed 0
    (the space BiX-NAS searches) and ``--random`` of the full space. References: BiO-Net++ (all skips) and
    the published BiX-Net gene, retrained with ``--retrain-seeds`` (U-Net is in ``bixnas table1``'s report).
Statistics
    Test IoU: mean +- sample std over search seeds of each seed's mean over retraining seeds (the search
    variance), and every retraining listed. BiX-NAS against each searching arm: paired two-sided t-test by
    search seed (``ttest_rel``; both arms of seed ``k`` had budget ``B_k``). Hypervolume of each arm's
    retrained points (test IoU, MACs at width 48 / BiO-Net++'s) against the reference point (IoU 0, ratio 1).
Ranking fidelity
    ``--fidelity-members`` members of the first Phase 2 stage, drawn from the narrowed space of search seed 0,
    are each retrained standalone with ``--retrain-seeds`` (final-epoch validation IoU, mean over seeds).
    One stage SuperNet per variant (fair/naive training, fresh/inherited-from-Phase-1 weights, longer stage,
    learning rate per member) scores them as the search does (best epoch, recalibrated BatchNorm). Kendall's
    tau of each variant against the standalone ranking, the sparse tau (pairs whose standalone means differ by
    less than the pooled standard error of a difference count as ties and are left out), and the null proxy:
    fewer MACs ranks higher.

Every unit (a search, a retraining, a scoring) caches its result as JSON under ``--work`` (atomic writes);
a rerun skips finished units, and the BiX-NAS chain and interrupted trainings resume from their folders.
RegularizedEvolution and RS-WS are not resumable: an interrupted run starts again. The markdown is
rewritten after every finished unit. ``torch.set_num_threads(--threads)`` is set explicitly.

Examples
--------
Smoke run of the whole pipeline (minutes; synthetic data, tiny sizes, results under the work dir)::

    python benchmarks/search_quality.py --quick

The CPU-sized run (MoNuSeg from ``../shared/data``; hours on 2 CPU cores)::

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

from nni.nas.execution import SequentialExecutionEngine  # noqa: E402
from nni.nas.execution.event import ModelEventType  # noqa: E402
from nni.nas.space import RawFormatModelSpace  # noqa: E402
from nni.nas.strategy import RegularizedEvolution  # noqa: E402

from nni_bixnas import create_model  # noqa: E402
from nni_bixnas.data import SegDataModule  # noqa: E402
from nni_bixnas.metrics import SegmentationMetrics  # noqa: E402
from nni_bixnas.profile import count_complexity  # noqa: E402
from nni_bixnas.space import BiONetPlusPlus, Gene, published_gene  # noqa: E402
from nni_bixnas.strategy import BiXNAS, SelectionMatrix  # noqa: E402
from nni_bixnas.strategy.pareto import select_parents  # noqa: E402
from nni_bixnas.strategy.runner import add_unit_listener  # noqa: E402
from nni_bixnas.strategy.skip_sampler import SkipSetSampler  # noqa: E402
from nni_bixnas.strategy.supernet.fair_step import evaluate_members, recalibrated_statistics  # noqa: E402
from nni_bixnas.strategy.supernet.spaces import check_stage_skips, narrow_space, phase2_module, space_reference  # noqa: E402
from nni_bixnas.strategy.units import phase2_stage_unit  # noqa: E402
from nni_bixnas.training import evaluate, make_evaluator, train_and_report  # noqa: E402
from nni_bixnas.utils import atomic_write  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table1_cpu import split_tiles  # noqa: E402  (the one tile split of the benchmarks)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data/monuseg/MoNuSegTrainingData"
DEFAULT_WORK = ROOT / "runs" / "search_quality"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "search_quality.md"

#: Sizes of the CPU-sized run and of ``--quick`` (only sizes differ; every code path is the same).
FULL = dict(data=None, width=8, epochs=10, phase1_epochs=10, phase2_epochs=2, samples=6, random=4, patch_size=128,
            re_epochs=2, search_seeds=3, retrain_seeds=2, fidelity_members=16, rsws_max=400)
QUICK = dict(data="default:n=14,size=64", width=4, epochs=1, phase1_epochs=1, phase2_epochs=1, samples=3, random=2,
             patch_size=32, re_epochs=1, search_seeds=2, retrain_seeds=2, fidelity_members=4, rsws_max=6)
QUICK_TEST = "default:n=4,size=64,seed=1"  # synthetic tiles of another seed: disjoint from the search's

BATCH_SIZE, LR, VAL_FRACTION = 4, 1e-3, 0.25
KEEP = (3, 2)
RE_POPULATION, RE_SAMPLE, RE_MUTATION = 8, 3, 0.2
RECALIBRATION_BATCHES = 8
TAU_FINAL = 0.1  # the annealed Phase 1 (SelectionMatrix tau_final): tau 1 -> 0.1, geometric
COLLAPSED = 0.05  # a final-epoch validation IoU below this: the retraining ended (nearly) all background
PAPER_WIDTH, PAPER_STEM = 48, 32
#: Ranking-fidelity variants: (name, phase2_stage_unit overrides, epochs factor).
VARIANTS = [("fair, fresh", dict(mode="fair"), 1), ("naive, fresh", dict(mode="naive"), 1),
            ("fair, inherited", dict(mode="fair", inherit=True), 1),
            ("fair, inherited, 2x epochs", dict(mode="fair", inherit=True), 2),
            ("fair, inherited, lr / members", dict(mode="fair", inherit=True, lr_per_member=True), 1)]
SEARCHING = ["BiX-NAS", "RegularizedEvolution", "RS-WS"]


# ----- settings --------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sizes = "(default: full run %s, --quick %s)"
    p.add_argument("--quick", action="store_true", help="minutes-long smoke run of the whole pipeline")
    p.add_argument("--data", default=None, help="MoNuSeg folder (Tissue_Images/, Binary_masks/) "
                   + sizes % (DEFAULT_DATA, QUICK["data"]))
    for name, help_ in [("width", "searched/trained width W (stem W)"), ("epochs", "retraining epochs E"),
                        ("phase1-epochs", "Phase 1 epochs"), ("phase2-epochs", "epochs per Phase 2 stage"),
                        ("samples", "Phase 2 skip sets per stage"), ("random", "random nets per random group"),
                        ("patch-size", "training crop P"), ("re-epochs", "RegularizedEvolution trial epochs"),
                        ("search-seeds", "search seeds 0..K-1 of BiX-NAS, RE and RS-WS"),
                        ("retrain-seeds", "retraining seeds 0..R-1 of every pick and reference"),
                        ("fidelity-members", "members of the ranking-fidelity population"),
                        ("rsws-max", "bound on the members RS-WS scores")]:
        key = name.replace("-", "_")
        p.add_argument(f"--{name}", type=int, default=None, help=f"{help_} " + sizes % (FULL[key], QUICK[key]))
    p.add_argument("--selection", default="one_se", choices=["one_se", "iou"],
                   help="Phase 2 selection of the BiX-NAS arm (default one_se, the library's default)")
    p.add_argument("--keep-sequential-last", default="true", choices=["true", "false"],
                   help="BiX-NAS Phase 2 and the narrowed random nets keep each last-stage block's sequential "
                        "input (default true, the authors' setting; false: the library's and the demo's)")
    p.add_argument("--selection-se", type=float, default=1.0,
                   help="standard errors of the one_se rule (default 1, the library's; the demo uses 2)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="tiles held out as the test set (default 0.2)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the test and validation splits (default 0)")
    p.add_argument("--no-fidelity", action="store_true", help="skip the ranking-fidelity part")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the finished units (the rest stays pending)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--work", default=None, help=f"cache and run folders (default {DEFAULT_WORK})")
    p.add_argument("--out", default=None, help=f"markdown result; the .json goes beside it (default {DEFAULT_OUT}, "
                                               "--quick: WORK/search_quality_quick.md)")
    p.add_argument("--verbose", action="store_true", help="keep the library logs (NNI, Lightning, nni_bixnas)")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every size left unset from :data:`FULL` or :data:`QUICK`, split the data, locate the folders."""
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.keep_sequential_last = args.keep_sequential_last in (True, "true")
    if args.selection_se < 0:
        raise SystemExit(f"search_quality: --selection-se {args.selection_se}: expected a number >= 0")
    args.work = Path(args.work) if args.work else DEFAULT_WORK
    args.out = Path(args.out) if args.out else (args.work / "search_quality_quick.md" if args.quick else DEFAULT_OUT)
    if args.quick:
        args.data, args.test, args.test_tiles, args.n_tiles = args.data, QUICK_TEST, ["seed-1 synthetic tiles"], None
        return args
    source = Path(args.data) if args.data else DEFAULT_DATA
    if not (source / "Tissue_Images").is_dir():
        raise SystemExit(f"search_quality: no MoNuSeg tiles at {source} (expected Tissue_Images/ and "
                         "Binary_masks/); pass --data PATH, or --quick")
    links = args.work / f"tiles-{digest(str(source.resolve()), args.test_fraction, args.split_seed)}"
    if not (links / "test").is_dir():
        staging = Path(tempfile.mkdtemp(prefix="tiles-", dir=args.work.mkdir(parents=True, exist_ok=True) or args.work))
        split_tiles(source, staging, args.test_fraction, args.split_seed)
        os.replace(staging, links)
    args.test_tiles = sorted(p.stem for p in (links / "test" / "Tissue_Images").glob("*.tif"))
    args.n_tiles = len(list((links / "trainval" / "Tissue_Images").glob("*.tif"))) + len(args.test_tiles)
    args.data, args.test = f"monuseg:{links / 'trainval'}", f"monuseg:{links / 'test'}"
    return args


def recipe(s) -> Dict[str, Any]:
    """The one retraining recipe (:func:`train_and_report` arguments; ``seed`` and ``out_dir`` per unit); a
    ``loss`` other than the authors' ``'ce'`` (``benchmarks/retrain_recipe.py``) is part of it."""
    loss = getattr(s, "loss", "ce")
    return dict(data=s.data, max_epochs=s.epochs, batch_size=BATCH_SIZE, patch_size=s.patch_size,
                split_seed=s.split_seed, val_fraction=VAL_FRACTION, lr=LR, **({} if loss == "ce" else {"loss": loss}))


def training(s) -> Dict[str, Any]:
    """Training settings of the search units (BiXNAS ``training``): the recipe's data and split."""
    return dict(data=s.data, batch_size=BATCH_SIZE, patch_size=s.patch_size, split_seed=s.split_seed,
                val_fraction=VAL_FRACTION)


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
class Pending(Exception):
    """A unit that ``--report-only`` would have to run."""


class Units:
    """Run units once: each result is a JSON file ``work/units/<key>.json`` (atomic), reused on reruns;
    ``read_only`` raises :class:`Pending` instead of running a unit."""

    def __init__(self, work: Path, on_finish: Callable[[], None], read_only: bool = False) -> None:
        self.dir = work / "units"
        self.on_finish, self.read_only = on_finish, read_only
        self.ran = self.cached = 0
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
        if self.read_only:
            raise Pending(title)
        self.log(f"start  {title}")
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        result["unit"] = {"key": key, "title": title, "wall_s": wall, "cpu_s": cpu, "finished": now(),
                          "load": os.getloadavg()[0]}
        with atomic_write(self.dir / f"{key}.json") as handle:
            json.dump(result, handle, indent=1, default=plain)
        self.ran += 1
        self.log(f"done   {title} ({wall:.1f} s wall, {cpu:.1f} s CPU)")
        self.on_finish()
        return self.get(key)


class Stopwatch:
    """Wall and CPU seconds of a BiX-NAS search per engine unit, summed over (resumed) attempts.

    ``mark(label)`` is called before every unit starts (``add_unit_listener``); a unit lasts until the next
    mark or the end. An attempt that died keeps its time up to its last mark. Saved after every mark.
    """

    def __init__(self, path: Path, log: Callable[[str], None]) -> None:
        self.path, self.log = path, log
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


def sample_spec(s, sample: Dict[str, List[int]]) -> Dict[str, Any]:
    return gene_spec(s, Gene.from_sample(sample).to_text())


def paper_width(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The same network at the paper's width (48, stem 32)."""
    return registry_spec(spec["name"], **{**spec["kwargs"], "width": PAPER_WIDTH, "stem_width": PAPER_STEM})


def macs48(units: Units, spec: Dict[str, Any]) -> int:
    """MACs at 1 x 3 x 512 x 512 at the paper's width (the one counter, ``count_complexity``), cached."""
    wide = paper_width(spec)

    def count():
        c = count_complexity(create_model(wide["name"], **wide["kwargs"]).cpu(), input_size=(512, 512))
        return {"params": c.params, "macs": c.macs, "spec": wide}
    return int(units.run(f"complexity-{digest(wide)}", f"MACs of {title(wide)}", count)["macs"])


def title(spec: Dict[str, Any]) -> str:
    width = spec["kwargs"].get("width", spec["kwargs"].get("base"))
    gene = f" gene {digest(spec['kwargs']['gene'])}" if "gene" in spec["kwargs"] else ""
    return f"{spec['name']}{gene} width {width}"


# ----- retraining: the one recipe, scored on validation and test at the final epoch -------------------
def retrain(units: Units, s, spec: Dict[str, Any], seed: int) -> Dict[str, Any]:
    key = f"retrain-{spec['name']}-{digest(spec, recipe(s), s.test)}-s{seed}"

    def train():
        out_dir = s.work / "train" / key
        final = train_and_report(create_model(spec["name"], **spec["kwargs"]), seed=seed, out_dir=str(out_dir),
                                 **recipe(s))
        last = out_dir / "checkpoints" / "last.ckpt"
        val = evaluate(last, s.data, split="val", batch_size=BATCH_SIZE)
        test = evaluate(last, s.test, split="all", batch_size=BATCH_SIZE)
        return {"best_val_iou": final["default"], "best_epoch": final["best_epoch"], "val_iou": val["iou"],
                "test_iou": test["iou"], "test_dice": test["dice"], "test_images": test["images"], "seed": seed,
                "spec": spec}
    return units.run(key, f"retrain {title(spec)} seed {seed}", train)


def retrain_all(units: Units, s, spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [retrain(units, s, spec, r) for r in range(s.retrain_seeds)]


# ----- BiX-NAS ----------------------------------------------------------------------------------------
def bixnas_space(s) -> RawFormatModelSpace:
    return RawFormatModelSpace.from_model(BiONetPlusPlus(width=s.width, stem_width=s.width),
                                          make_evaluator(**recipe(s)))


def phase2_kwargs(s) -> Dict[str, Any]:
    """ProgressiveEvolution's keywords of the BiX-NAS arm (``selection_se`` only when not the default 1, so
    that runs from before the option keep their folders)."""
    se = getattr(s, "selection_se", 1.0)
    return {"samples": s.samples, "epochs": s.phase2_epochs, "keep": KEEP, "lr_per_member": False,
            "keep_sequential_last": getattr(s, "keep_sequential_last", True), "member_bn": "recalibrate",
            "inherit_weights": True, "selection": s.selection,
            **({"selection_se": se} if s.selection == "one_se" and se != 1.0 else {})}


def search_dir(s, seed: int) -> Path:
    return s.work / f"bixnas-{digest(training(s), s.width, s.phase1_epochs, phase2_kwargs(s), seed)}"


def bixnas_search(s, units: Units, seed: int) -> Dict[str, Any]:
    """Phase 1 + Phase 2 (no retraining), timed per unit."""
    out = search_dir(s, seed)
    clock = Stopwatch(out / "search_timing.json", units.log)
    strategy = BiXNAS(phase1={"epochs": s.phase1_epochs}, phase2=phase2_kwargs(s), retrain=None,
                      training=training(s), out_dir=str(out), seed=seed)
    engine = SequentialExecutionEngine()

    def current() -> str:
        if strategy.phase1.result is None:
            return "Phase 1"
        return f"Phase 2, stage unit #{len(strategy.phase2.history) + 1 if strategy.phase2 else 1}"
    remove = add_unit_listener(engine, lambda: clock.mark(current()))
    clock.start()
    try:
        strategy(bixnas_space(s), engine)
    finally:
        remove()
        clock.end()
    result = json.loads((out / "result.json").read_text())
    timing = clock.summary()
    phase1_wall = sum(u["wall_s"] for u in timing["units"] if u["unit"] == "Phase 1")
    return {"sample": result["final_samples"][0], "gene": result["genes"][0], "candidates": strategy.phase1.candidates,
            "phase1_iou": strategy.phase1.result.get("default"), "phase1_weights": strategy.phase1.result["weights"],
            "phase2_history": result["phase2_history"], "timing": timing, "phase1_wall_s": phase1_wall,
            "budget_s": timing["wall_s"], "seed": seed}


# ----- the narrowed space: its sampler and shared-weight scoring ---------------------------------------
def narrowed(s, candidates: Dict[str, List[int]]):
    """``(space module, sampler, initial parent)`` of the Phase-1-narrowed space, as Phase 2 builds them."""
    space = narrow_space(bixnas_space(s), candidates)
    module = phase2_module(space)
    skips = check_stage_skips(space.simplify(), fits_max_k=True)
    sampler = SkipSetSampler.from_skips(skips, samples=s.fidelity_members,
                                        keep_sequential_last=getattr(s, "keep_sequential_last", True), max_redraws=500,
                                        effective=module.effective_sample)
    parent = {label: list(m.candidates) for label, m in skips.items()}
    return space, module, sampler, parent


def random_member(sampler: SkipSetSampler, rs: RandomState) -> Dict[str, List[int]]:
    """A member of the narrowed space drawn block by block with BiX-NAS's own sampler (its
    ``keep_sequential_last``)."""
    return {label: sampler.sample_block(label, stage == sampler.last_stage, rs)
            for stage, labels in sampler.blocks.items() for label in labels}


class SharedScorer:
    """Validation IoU of members on trained SuperNet weights, with per-member recalibrated BatchNorm."""

    def __init__(self, s, candidates: Dict[str, List[int]], weights: str, stage: int) -> None:
        self.model = BiONetPlusPlus(width=s.width, stem_width=s.width, candidates=candidates)
        state, own = torch.load(weights, map_location="cpu", weights_only=True), self.model.state_dict()
        self.model.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape},
                                   strict=False)  # Phase 1's fusion modules are not Phase 2's
        self.model.eval()
        module = SegDataModule(data=s.data, batch_size=BATCH_SIZE, patch_size=s.patch_size, split_seed=s.split_seed,
                               val_fraction=VAL_FRACTION, seed=0)
        module.setup("fit")
        self.batches = []
        for images, _ in module.train_dataloader(epoch=0):
            self.batches.append(images)
            if len(self.batches) == RECALIBRATION_BATCHES:
                break
        self.val = list(module.val_dataloader())
        self.stage = stage

    @torch.no_grad()
    def __call__(self, member: Dict[str, List[int]]) -> float:
        stats = [recalibrated_statistics(self.model, self.batches, self.stage, member)]
        metric = SegmentationMetrics()
        for images, target in self.val:
            metric.update(evaluate_members(self.model, images, self.stage, [member], "recalibrate", stats)[0].float(),
                          target)
        return float(metric.compute()["iou"])


def rs_ws(s, units: Units, search: Dict[str, Any]) -> Dict[str, Any]:
    """Random members of the narrowed space scored on Phase 1's SuperNet until ``B_k - Phase 1`` is spent."""
    budget = max(0.0, search["budget_s"] - search["phase1_wall_s"])
    _, _, sampler, parent = narrowed(s, search["candidates"])
    score = SharedScorer(s, search["candidates"], search["phase1_weights"], min(sampler.blocks))  # all searched stages
    rs, seen, scored, started = RandomState([search["seed"], 7]), set(), [], time.perf_counter()
    export_iou = score(parent)  # Phase 1's argmax export (every narrowed candidate fused), hard, on its own weights
    while len(scored) < s.rsws_max and (time.perf_counter() - started < budget or not scored):
        member = random_member(sampler, rs)
        key = sampler.effective_key(member)
        if key in seen:
            continue
        seen.add(key)
        scored.append({"sample": member, "iou": score(member)})
    best = max(scored, key=lambda m: m["iou"])
    return {"budget_s": budget, "spent_s": time.perf_counter() - started, "scored": len(scored), "best": best,
            "gene": Gene.from_sample(best["sample"]).to_text(), "phase1_soft_iou": search["phase1_iou"],
            "phase1_export_iou": export_iou, "ious": [m["iou"] for m in scored]}


def phase1_dir(s, variant: str, seed: int, tau_final: Optional[float] = None) -> Path:
    annealed = "" if tau_final is None else f"-tau{tau_final:g}"
    return s.work / f"phase1-{variant}{annealed}-{digest(training(s), s.width, s.phase1_epochs, seed)}"


def phase1_variant(s, seed: int, variant: str, tau_final: Optional[float] = None) -> Dict[str, Any]:
    """Phase 1 alone with another selection-matrix ``variant`` (``'paper'``: straight-through one-hot columns)
    or an annealed temperature (``tau_final``), with the seed and training of search seed ``seed``'s Phase 1:
    its soft validation IoU against its hard export's."""
    strategy = SelectionMatrix(epochs=s.phase1_epochs, variant=variant, tau_final=tau_final, training=training(s),
                               out_dir=str(phase1_dir(s, variant, seed, tau_final)), seed=seed)
    strategy(bixnas_space(s), SequentialExecutionEngine())
    candidates = strategy.candidates
    _, _, sampler, parent = narrowed(s, candidates)
    score = SharedScorer(s, candidates, strategy.result["weights"], min(sampler.blocks))
    name = variant if tau_final is None else f"{variant}, tau 1 -> {tau_final:g}"
    return {"variant": name, "soft_iou": strategy.result.get("default"), "export_iou": score(parent),
            "candidates": candidates, "fused": sum(len(v) for v in candidates.values())}


# ----- RegularizedEvolution ---------------------------------------------------------------------------
def run_re(s, units: Units, budget: float, seed: int) -> Dict[str, Any]:
    """NNI's RegularizedEvolution on the full space until its trials have used ``budget`` wall seconds."""
    trials_dir = s.work / f"re-{digest(recipe(s), s.re_epochs, budget, seed)}" / "trials"
    shutil.rmtree(trials_dir, ignore_errors=True)  # not resumable: an interrupted run starts again
    trials_dir.mkdir(parents=True)
    space = RawFormatModelSpace.from_model(BiONetPlusPlus(width=s.width, stem_width=s.width),
                                           make_evaluator(**{**recipe(s), "max_epochs": s.re_epochs}))
    strategy = RegularizedEvolution(population_size=RE_POPULATION, sample_size=RE_SAMPLE, mutation_prob=RE_MUTATION,
                                    seed=seed)
    engine = SequentialExecutionEngine(max_duration=budget)
    engine.register_model_event_callback(
        ModelEventType.TrainingEnd, lambda event: units.log(f"  RE trial {len(list(engine.list_models()))}: "
                                                            f"IoU {event.model.metric}"))
    previous, tempfile.tempdir = tempfile.tempdir, str(trials_dir)  # train_and_report's run folders go here
    try:
        strategy(space, engine)
    finally:
        tempfile.tempdir = previous
    trials = [{"sample": m.sample, "iou": m.metric} for m in engine.list_models()]
    scored = [t for t in trials if isinstance(t["iou"], (int, float)) and math.isfinite(t["iou"])]
    best = max(scored, key=lambda t: t["iou"])
    return {"budget_s": budget, "engine_trial_s": engine.state_dict()["total_duration"], "trials": len(trials),
            "trial_ious": [t["iou"] for t in scored], "best": best, "gene": Gene.from_sample(best["sample"]).to_text()}


# ----- ranking fidelity -------------------------------------------------------------------------------
def fidelity_population(s, search: Dict[str, Any]) -> Dict[str, Any]:
    """``fidelity_members`` distinct members of the first Phase 2 stage, drawn by the Phase 2 sampler."""
    _, _, sampler, parent = narrowed(s, search["candidates"])
    _, members = sampler.sample_population(sampler.last_stage, [parent], RandomState([search["seed"], 11]))
    return {"stage": sampler.last_stage, "members": members[:s.fidelity_members]}


def fidelity_stage(s, search: Dict[str, Any], population: Dict[str, Any], variant: Tuple) -> Dict[str, Any]:
    name, options, factor = variant
    options = dict(options)
    inherit, per_member = options.pop("inherit", False), options.pop("lr_per_member", False)
    members = population["members"]
    space = space_reference(narrow_space(bixnas_space(s), search["candidates"]))
    result = phase2_stage_unit(
        space=space, stage=population["stage"], members=members, candidates=search["candidates"],
        epochs=s.phase2_epochs * factor, milestones=None, gamma=0.1, step="low_memory", member_bn="recalibrate",
        recalibration_batches=RECALIBRATION_BATCHES, macs_input_size=[512, 512],
        init_weights=search["phase1_weights"] if inherit else None, out_dir=str(s.work / f"fidelity-{digest(name)}"),
        training={**training(s), "lr": LR / len(members) if per_member else LR}, **options)
    return {"variant": name, "iou": [p["iou"] for p in result["population"]],
            "image_iou": [p.get("image_iou") for p in result["population"]]}


def kendall(x: Sequence[float], y: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    from scipy import stats

    if len(x) < 2 or len(x) != len(y):
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def sparse_tau(x: Sequence[float], y: Sequence[float], noise: float) -> Tuple[Optional[float], int]:
    """Kendall's tau over the pairs whose ``y`` differ by more than ``noise`` (the others are ties in noise)."""
    concordant = discordant = 0
    for i in range(len(y)):
        for j in range(i + 1, len(y)):
            if abs(y[i] - y[j]) <= noise:
                continue
            sign = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            concordant, discordant = concordant + (sign > 0), discordant + (sign < 0)
    pairs = concordant + discordant
    return ((concordant - discordant) / pairs if pairs else None), int(pairs)


# ----- the pipeline -----------------------------------------------------------------------------------
def run_all(s, units: Units, state: Dict[str, Any], progress: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    """Every unit, in order (the arms of each search seed first, then the fixed arms, then the fidelity), into
    ``state`` (filled in place); ``progress(state)`` after each finished part."""
    state.update({"seeds": {}, "random": {}, "references": {}, "fidelity": None, "phase1_hard": {},
                  "phase1_annealed": {}, "ref_macs": macs48(units, reference_specs(s)[0][1])})
    for k in range(s.search_seeds):
        search = units.run(f"bixnas-search-{search_dir(s, k).name}", f"BiX-NAS search seed {k}",
                           lambda: bixnas_search(s, units, k))
        picks = {"BiX-NAS": {"gene": search["gene"], "search_s": search["budget_s"]}}
        budget = float(search["budget_s"])
        evolution = units.run(f"re-{digest(recipe(s), s.re_epochs, budget, k)}",
                              f"RegularizedEvolution seed {k} ({budget:.0f} s budget)",
                              lambda: run_re(s, units, budget, k))
        picks["RegularizedEvolution"] = {"gene": evolution["gene"], "search_s": evolution["engine_trial_s"],
                                         "trials": evolution["trials"]}
        shared = units.run(f"rsws-{digest(search['gene'], budget, s.rsws_max, k)}", f"RS-WS seed {k}",
                           lambda: rs_ws(s, units, search))
        picks["RS-WS"] = {"gene": shared["gene"], "search_s": search["phase1_wall_s"] + shared["spent_s"],
                          "scored": shared["scored"], "phase1_soft_iou": shared["phase1_soft_iou"],
                          "phase1_export_iou": shared["phase1_export_iou"]}
        state["seeds"][k] = {"budget_s": budget, "picks": {}, "search": search}
        for name, pick in picks.items():
            spec = gene_spec(s, pick["gene"])
            pick["macs48"], pick["runs"] = macs48(units, spec), retrain_all(units, s, spec)
            state["seeds"][k]["picks"][name] = pick
            progress(state)
    for name, spec in reference_specs(s):
        state["references"][name] = {"macs48": macs48(units, spec), "runs": retrain_all(units, s, spec)}
        progress(state)
    first = units.get(f"bixnas-search-{search_dir(s, 0).name}")
    _, module, sampler, _ = narrowed(s, first["candidates"])
    space_full = BiONetPlusPlus(width=s.width, stem_width=s.width)
    draws = {"narrowed": distinct(lambda rs: random_member(sampler, rs), sampler.effective_key, s.random),
             "full space": distinct(lambda rs: full_member(space_full, rs), sampler.effective_key, s.random)}
    for group, samples in draws.items():
        rows = []
        for sample in samples:
            spec = sample_spec(s, sample)
            rows.append({"macs48": macs48(units, spec), "runs": [retrain(units, s, spec, 0)]})
            state["random"][group] = rows
            progress(state)
    if not s.no_fidelity:
        population = units.run(f"fidelity-population-{digest(first['candidates'], s.fidelity_members)}",
                               "fidelity population", lambda: fidelity_population(s, first))
        standalone = [retrain_all(units, s, sample_spec(s, m)) for m in population["members"]]
        variants = [units.run(f"fidelity-{digest(v[0], population, s.phase2_epochs, training(s))}",
                              f"fidelity stage: {v[0]}", lambda v=v: fidelity_stage(s, first, population, v))
                    for v in VARIANTS]
        state["fidelity"] = {"population": population, "standalone": standalone, "variants": variants,
                             "macs48": [macs48(units, sample_spec(s, m)) for m in population["members"]]}
        progress(state)
    for k in range(s.search_seeds):
        state["phase1_hard"][k] = units.run(phase1_dir(s, "paper", k).name,
                                            f"Phase 1 'paper' variant seed {k}", lambda: phase1_variant(s, k, "paper"))
        progress(state)
    for k in range(s.search_seeds):
        state.setdefault("phase1_annealed", {})[k] = units.run(
            phase1_dir(s, "code", k, TAU_FINAL).name, f"Phase 1 'code', tau annealed to {TAU_FINAL}, seed {k}",
            lambda: phase1_variant(s, k, "code", TAU_FINAL))
        progress(state)
    progress(state)
    return state


def reference_specs(s) -> List[Tuple[str, Dict[str, Any]]]:
    return [("BiO-Net++ (all skips)", registry_spec("bionet_pp", width=s.width, stem_width=s.width)),
            ("BiX-Net (published gene)", gene_spec(s, published_gene().to_text()))]


def full_member(space: BiONetPlusPlus, rs: RandomState) -> Dict[str, List[int]]:
    sample: Dict[str, List[int]] = {}
    for label, mutable in sorted(space.simplify().items()):
        mutable.random(sample, random_state=rs)  # SkipSubset.random: k ~ U{1..max_k}, then k of the candidates
    return sample


def distinct(draw: Callable[[RandomState], Dict[str, List[int]]], key: Callable, n: int) -> List[Dict[str, List[int]]]:
    rs, seen, out = RandomState(12345), set(), []
    for _ in range(100 * n):
        sample = draw(rs)
        if key(sample) not in seen:
            seen.add(key(sample))
            out.append(sample)
        if len(out) == n:
            break
    return out


# ----- the report ---------------------------------------------------------------------------------------
def mean(values: Sequence[float]) -> Optional[float]:
    return statistics.fmean(values) if values else None


def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "pending"
    std = f"{statistics.stdev(values):.4f}" if len(values) > 1 else "—"
    return f"{statistics.fmean(values):.4f} ± {std}"


def num(value: Optional[float], digits: int = 4) -> str:
    if value is None:
        return "—"
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"


def paired_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    from scipy import stats

    if len(a) < 2 or len(a) != len(b):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.ttest_rel(a, b).pvalue)
    return None if math.isnan(p) else p


def hypervolume(points: Sequence[Tuple[float, float]]) -> float:
    """Area dominated by ``(iou, macs ratio)`` points (IoU maximised, ratio minimised) against (0, 1)."""
    area, best = 0.0, 0.0
    for ratio, iou in sorted((min(r, 1.0), max(i, 0.0)) for i, r in points):
        if iou > best:
            area += (1.0 - ratio) * (iou - best)
            best = iou
    return area


def summarise(s, state: Dict[str, Any]) -> Dict[str, Any]:
    """Every figure of the report, computed from the units' results."""
    ref_macs = state["ref_macs"]
    arms: Dict[str, Any] = {}
    for name in SEARCHING:
        seeds = {k: v["picks"][name] for k, v in state["seeds"].items() if name in v["picks"]}
        per_seed = {k: mean([r["test_iou"] for r in p["runs"]]) for k, p in seeds.items()}
        ratio = {k: p["macs48"] / ref_macs for k, p in seeds.items()}
        arms[name] = {
            "seed_test_iou": per_seed,
            "seed_val_iou": {k: mean([r["val_iou"] for r in p["runs"]]) for k, p in seeds.items()},
            "runs_test_iou": [r["test_iou"] for p in seeds.values() for r in p["runs"]],
            "macs48": {k: p["macs48"] for k, p in seeds.items()}, "macs_ratio": ratio,
            "search_s": {k: p["search_s"] for k, p in seeds.items()},
            "hypervolume": hypervolume([(per_seed[k], ratio[k]) for k in per_seed]) if per_seed else None,
        }
    bix = arms["BiX-NAS"]["seed_test_iou"]
    for name in SEARCHING[1:]:
        other = arms[name]["seed_test_iou"]
        keys = sorted(set(bix) & set(other))
        arms[name]["p_vs_bixnas"] = paired_p([bix[k] for k in keys], [other[k] for k in keys])
    fixed = {}
    for name, ref in state["references"].items():
        fixed[name] = {"test_iou": [r["test_iou"] for r in ref["runs"]], "val_iou": [r["val_iou"] for r in ref["runs"]],
                       "macs_ratio": ref["macs48"] / ref_macs}
    for group, rows in state["random"].items():
        fixed[f"Random nets, {group}"] = {
            "test_iou": [r["runs"][0]["test_iou"] for r in rows], "val_iou": [r["runs"][0]["val_iou"] for r in rows],
            "macs_ratio": mean([r["macs48"] / ref_macs for r in rows])}
    out = {"arms": arms, "fixed": fixed, "fidelity": fidelity_summary(state["fidelity"]),
           "selection_replay": selection_replay(state, ref_macs), "phase1_hard": phase1_hard(state)}
    bix_iou, re_iou = mean(list(bix.values())), mean(list(arms["RegularizedEvolution"]["seed_test_iou"].values()))
    ws_iou = mean(list(arms["RS-WS"]["seed_test_iou"].values()))
    bix_ratio = mean(list(arms["BiX-NAS"]["macs_ratio"].values()))
    out["targets"] = {
        "BiX-NAS mean test IoU >= RegularizedEvolution's": None if None in (bix_iou, re_iou) else bix_iou >= re_iou,
        "BiX-NAS mean MACs <= 85% of BiO-Net++'s": None if bix_ratio is None else bix_ratio <= 0.85,
        "BiX-NAS mean test IoU > RS-WS's": None if None in (bix_iou, ws_iou) else bix_iou > ws_iou,
    }
    out["values"] = {"bixnas": bix_iou, "re": re_iou, "rsws": ws_iou, "bixnas_macs_ratio": bix_ratio}
    groups = {
        "searched picks and references": [r for seed in state["seeds"].values() for p in seed["picks"].values()
                                          for r in p["runs"]] + [r for ref in state["references"].values()
                                                                 for r in ref["runs"]],
        "random nets": [r for rows in state["random"].values() for row in rows for r in row["runs"]],
        "ranking-fidelity members": [r for member in (state["fidelity"] or {}).get("standalone", []) for r in member],
    }
    counts = {name: [sum(r["val_iou"] < COLLAPSED for r in runs), len(runs)] for name, runs in groups.items()}
    out["collapsed"] = {"below": COLLAPSED, "runs": sum(n for _, n in counts.values()),
                        "collapsed": sum(c for c, _ in counts.values()), "groups": counts}
    return out


def collapsed_sentence(c: Dict[str, Any]) -> str:
    """How many retrainings end nearly all background, in all and per group (``summarise``'s ``collapsed``)."""
    groups = "; ".join(f"{name} {n} of {runs}" for name, (n, runs) in c.get("groups", {}).items() if runs)
    return (f"{c['collapsed']} of the run's {c['runs']} retrainings end with a final-epoch validation IoU below "
            f"{c['below']} (nearly all background)" + (f": {groups}." if groups else "."))


REPLAY = [("iou", 0.0), ("one_se", 0.0), ("one_se", 1.0), ("one_se", 2.0), ("one_se", 3.0)]


def phase1_hard(state: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per search seed: Phase 1 'code' (the search's own, scored by the RS-WS unit) and, once run, 'paper'."""
    rows = []
    for k, seed in state["seeds"].items():
        if "RS-WS" in seed["picks"]:
            code = seed["picks"]["RS-WS"]
            rows.append({"seed": k, "variant": "code", "soft_iou": code["phase1_soft_iou"],
                         "export_iou": code["phase1_export_iou"],
                         "fused": sum(len(v) for v in seed["search"]["candidates"].values())})
        for other in ("phase1_hard", "phase1_annealed"):
            run = (state.get(other) or {}).get(k)
            if run:
                rows.append({"seed": k, "variant": run["variant"], "soft_iou": run["soft_iou"],
                             "export_iou": run["export_iou"], "fused": run["fused"]})
    for row in rows:
        row["gap"] = None if row["soft_iou"] is None else row["soft_iou"] - row["export_iou"]
    return rows


def selection_replay(state: Dict[str, Any], ref_macs: int) -> List[Dict[str, Any]]:
    """Each BiX-NAS stage population re-selected offline by every rule of :data:`REPLAY`: the first pick's
    shared-weight IoU and MACs (at the search's width, over BiO-Net++'s at that width: the first stage's
    dense parent is the reference). Later stages depend on earlier picks, so this compares rules per stage."""
    rows = []
    for k, seed in state["seeds"].items():
        for stage in seed["search"]["phase2_history"]:
            pop = stage["population"]
            if not pop:
                continue
            dense = max(p["macs"] for p in seed["search"]["phase2_history"][0]["population"])
            row = {"seed": k, "stage": stage["stage"], "members": len(pop), "picks": []}
            for rule, n_se in REPLAY:
                first = select_parents([p["iou"] for p in pop], [p["macs"] for p in pop], 1, selection=rule,
                                       image_ious=[p.get("image_iou") or [] for p in pop], n_se=n_se)[0]
                row["picks"].append({"rule": f"{rule} ({n_se:g} SE)" if rule == "one_se" else rule,
                                     "iou": pop[first]["iou"], "macs_ratio": pop[first]["macs"] / dense})
            rows.append(row)
    return rows


def fidelity_summary(fidelity: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if not fidelity:
        return None
    runs = fidelity["standalone"]
    standalone = [mean([r["val_iou"] for r in member]) for member in runs]
    # pooled standard error of the difference of two members' seed means (ties within noise)
    spreads = [statistics.variance([r["val_iou"] for r in member]) for member in runs if len(member) > 1]
    noise = math.sqrt(2 * statistics.fmean(spreads) / len(runs[0])) if spreads else 0.0
    rows = []
    for variant in fidelity["variants"]:
        tau, p = kendall(variant["iou"], standalone)
        sparse, pairs = sparse_tau(variant["iou"], standalone, noise)
        rows.append({"variant": variant["variant"], "tau": tau, "p": p, "sparse_tau": sparse, "pairs": pairs})
    cheap = [-m for m in fidelity["macs48"]]
    tau, p = kendall(cheap, standalone)
    sparse, pairs = sparse_tau(cheap, standalone, noise)
    rows.append({"variant": "null proxy: fewer MACs ranks higher", "tau": tau, "p": p, "sparse_tau": sparse,
                 "pairs": pairs})
    return {"rows": rows, "members": len(standalone), "seeds": len(runs[0]), "noise": noise,
            "standalone_span": [min(standalone), max(standalone)], "stage": fidelity["population"]["stage"],
            "collapsed": sum(r["val_iou"] < COLLAPSED for member in runs for r in member),
            "retrainings": sum(len(member) for member in runs),
            "picks": fidelity_picks(fidelity)}


def fidelity_picks(fidelity: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every rule of :data:`REPLAY` applied to each variant's shared-weight scores of the fidelity population:
    the standalone (retrained) validation and test IoU of the member it picks, and its MACs over the densest
    member's. This is the measurement the default ``selection`` is chosen by: a rule is better when its picks
    retrain better (or as well, cheaper)."""
    runs, macs = fidelity["standalone"], fidelity["macs48"]
    val = [mean([r["val_iou"] for r in member]) for member in runs]
    test = [mean([r["test_iou"] for r in member]) for member in runs]
    dense = max(macs)
    rows = []
    for variant in fidelity["variants"]:
        if not all(variant.get("image_iou") or []):
            continue  # a stage scored before per-image IoUs were kept: the SE rules cannot be replayed
        row = {"variant": variant["variant"], "picks": []}
        for rule, n_se in REPLAY:
            first = select_parents(variant["iou"], macs, 1, selection=rule, image_ious=variant["image_iou"],
                                   n_se=n_se)[0]
            row["picks"].append({"rule": f"{rule} ({n_se:g} SE)" if rule == "one_se" else rule,
                                 "val_iou": val[first], "test_iou": test[first], "macs_ratio": macs[first] / dense})
        rows.append(row)
    if rows:
        rows.append({"variant": "mean over the variants above", "picks": [
            {"rule": rule["rule"], **{key: mean([row["picks"][i][key] for row in rows])
                                      for key in ("val_iou", "test_iou", "macs_ratio")}}
            for i, rule in enumerate(rows[0]["picks"])]})
        best = max(range(len(val)), key=lambda i: val[i])
        rows.append({"variant": "oracle: best standalone validation IoU", "picks": [
            {"rule": "oracle", "val_iou": val[best], "test_iou": test[best], "macs_ratio": macs[best] / dense}]})
    return rows


def machine() -> str:
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
            f"thread(s) (`torch.set_num_threads`), Python {platform.python_version()}; load average {load} when "
            "written (the machine may be shared: wall times, and so the budgets, grow with its load)")


def render(s, state: Dict[str, Any], summary: Dict[str, Any], meta: Dict[str, Any]) -> str:
    arms, fixed = summary["arms"], summary["fixed"]
    lines = ["# Search quality: BiX-NAS vs NNI's RegularizedEvolution, random search and random nets", "",
             "**Run complete.**" if meta["complete"] else "**Run incomplete: rows so far.**", "",
             f"- command: `{meta['command']}`", date_line(meta),
             f"- machine: {machine()}",
             f"- data: {s.n_tiles or '?'} tiles; test (held out, never read by a search or a selection): "
             f"{', '.join(s.test_tiles)}; the rest split into train/validation by tile (val_fraction "
             f"{VAL_FRACTION}, split_seed {s.split_seed})",
             f"- recipe: `train_and_report(max_epochs={s.epochs}, batch_size={BATCH_SIZE}, patch_size={s.patch_size}, "
             f"lr={LR})`, width {s.width}; scored at the **final epoch** (`last.ckpt`) on validation and test; "
             f"retraining seeds 0..{s.retrain_seeds - 1}",
             f"- BiX-NAS: Phase 1 {s.phase1_epochs} epochs, Phase 2 {phase2_kwargs(s)}; search seeds "
             f"0..{s.search_seeds - 1}. RE: population {RE_POPULATION}, sample {RE_SAMPLE}, mutation {RE_MUTATION}, "
             f"{s.re_epochs}-epoch trials, budget = the same seed's BiX-NAS wall seconds. RS-WS: at most "
             f"{s.rsws_max} members on Phase 1's SuperNet within that budget less Phase 1's",
             "- tests: paired two-sided t-test by search seed (`ttest_rel`) of the per-seed mean test IoU", ""]
    lines += ["## Searching arms (test IoU)", "",
              "Per search seed: the pick's mean test IoU over its retrainings; the arm: mean ± std over search seeds. "
              "MACs at 1x3x512x512, width 48, as a fraction of BiO-Net++'s. Hypervolume of the (test IoU, MACs ratio) "
              "points of the seeds against (0, 1).", "",
              "| arm | seeds done | test IoU | val IoU | MACs / BiO-Net++ | hypervolume | p vs BiX-NAS | search s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in SEARCHING:
        a = arms[name]
        seeds = a["seed_test_iou"]
        lines.append(f"| {name} | {len(seeds)}/{s.search_seeds} | {mean_std(list(seeds.values()))} | "
                     f"{mean_std(list(a['seed_val_iou'].values()))} | {num(mean(list(a['macs_ratio'].values())), 3)} | "
                     f"{num(a['hypervolume'])} | {num(a.get('p_vs_bixnas'), 3)} | "
                     f"{num(mean(list(a['search_s'].values())), 0)} |")
    lines += ["", "| search seed | budget s | arm | gene id | MACs / BiO-Net++ | test IoU per retraining | mean |",
              "|---:|---:|---|---|---:|---|---:|"]
    for k, seed in state["seeds"].items():
        for name in SEARCHING:
            if name not in seed["picks"]:
                continue
            pick = seed["picks"][name]
            ratio = arms[name]["macs_ratio"].get(k)
            lines.append(f"| {k} | {seed['budget_s']:.0f} | {name} | {digest(pick['gene'])} | {num(ratio, 3)} | "
                         + ", ".join(f"{r['test_iou']:.4f}" for r in pick["runs"])
                         + f" | {num(arms[name]['seed_test_iou'].get(k))} |")
    lines += ["", "## Arms without search", "", "| arm | nets or seeds | test IoU | val IoU | MACs / BiO-Net++ |",
              "|---|---:|---:|---:|---:|"]
    for name, f in fixed.items():
        lines.append(f"| {name} | {len(f['test_iou'])} | {mean_std(f['test_iou'])} | {mean_std(f['val_iou'])} | "
                     f"{num(f['macs_ratio'], 3)} |")
    lines += ["", collapsed_sentence(summary["collapsed"])]
    lines += ["", "## Targets", ""]
    for target, flag in summary["targets"].items():
        lines.append(f"- {target}: {'pending' if flag is None else ('yes' if flag else 'no')}")
    v = summary["values"]
    lines += ["", f"BiX-NAS {num(v['bixnas'])} vs RE {num(v['re'])} vs RS-WS {num(v['rsws'])} test IoU; BiX-NAS at "
              f"{num(v['bixnas_macs_ratio'], 3)} of BiO-Net++'s MACs."]
    replay = summary["selection_replay"]
    lines += ["", "## Selection rules replayed on the searches' own stages", "",
              "Each stage population re-selected offline; the first pick's shared-weight IoU / MACs as a fraction of "
              "the stage's densest member (later stages depend on the picks, so this compares rules stage by stage).",
              ""]
    if replay:
        lines += ["| seed | stage | members | " + " | ".join(p["rule"] for p in replay[0]["picks"]) + " |",
                  "|---:|---:|---:|" + "---|" * len(replay[0]["picks"])]
        for row in replay:
            lines.append(f"| {row['seed']} | {row['stage']} | {row['members']} | "
                         + " | ".join(f"{p['iou']:.4f} / {p['macs_ratio']:.3f}" for p in row["picks"]) + " |")
    fid = summary["fidelity"]
    lines += ["", "## Ranking fidelity", ""]
    if fid is None:
        lines.append("Pending (or skipped with `--no-fidelity`).")
    else:
        lines += [f"{fid['members']} members of stage {fid['stage']} (narrowed space of search seed 0), each retrained "
                  f"standalone with {fid['seeds']} seeds (final-epoch validation IoU, mean; span "
                  f"{fid['standalone_span'][0]:.4f}–{fid['standalone_span'][1]:.4f}; {fid['collapsed']} of "
                  f"{fid['retrainings']} retrainings end below IoU {COLLAPSED}, nearly all background). "
                  f"Sparse tau: pairs whose standalone means differ by at most {fid['noise']:.4f} (pooled SE of a "
                  "difference) are ties, left out.", "",
                  *tau_table(fid["rows"])]
        lines += ["", "### Which selection rule picks members that retrain better", "",
                  "Each rule applied to each variant's shared-weight scores of these members (one pick): the "
                  "picked member's standalone validation IoU / test IoU / MACs over the densest member's.", ""]
        lines += picks_table(fid.get("picks") or []) or ["Pending (the variants' per-image IoUs are needed)."]
    hard = summary.get("phase1_hard") or []
    lines += ["", "## Phase 1: the 'code' (soft), 'paper' (hard, straight-through) and annealed selection matrix", "",
              f"Same seed and training per row; annealed: 'code' with tau 1 -> {TAU_FINAL:g} (geometric, "
              "`SelectionMatrix(tau_final=...)`). Soft IoU: Phase 1's reported validation IoU (its own forward, "
              "Gumbel noise drawn); export IoU: the narrowed space's dense parent on the same weights, recalibrated "
              "BatchNorm; fused: the number of inputs the export keeps over all blocks.", ""]
    lines += phase1_table(hard) if hard else ["Pending."]
    return "\n".join(lines) + "\n"


# Tables of the results file that README's section (benchmarks/readme_search.py) shows too.
def tau_table(rows: Sequence[Dict[str, Any]]) -> List[str]:
    return ["| ranking | Kendall tau | p | sparse tau | pairs |", "|---|---:|---:|---:|---:|",
            *(f"| {row['variant']} | {num(row['tau'], 3)} | {num(row['p'], 3)} | {num(row['sparse_tau'], 3)} | "
              f"{row['pairs']} |" for row in rows)]


def picks_table(picks: Sequence[Dict[str, Any]]) -> List[str]:
    """:func:`fidelity_picks` as a table (no lines when there are none)."""
    if not picks:
        return []
    rules = [p["rule"] for p in picks[0]["picks"]]
    lines = ["| scores from | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for row in picks:
        cells = [f"{p['val_iou']:.4f} / {p['test_iou']:.4f} / {p['macs_ratio']:.3f}" for p in row["picks"]]
        lines.append(f"| {row['variant']} | " + " | ".join(cells + [""] * (len(rules) - len(cells))) + " |")
    return lines


def phase1_table(rows: Sequence[Dict[str, Any]]) -> List[str]:
    return ["| search seed | variant | soft IoU | export IoU | gap | fused |", "|---:|---|---:|---:|---:|---:|",
            *(f"| {row['seed']} | {row['variant']} | {num(row['soft_iou'])} | {num(row['export_iou'])} | "
              f"{num(row['gap'])} | {row['fused']} |" for row in rows)]


def quiet(verbose: bool) -> None:
    if verbose:
        return
    for name in ("nni", "pytorch_lightning", "lightning", "lightning.pytorch", "nni_bixnas"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    s = resolve(args)
    torch.set_num_threads(s.threads)
    quiet(s.verbose)
    meta = run_meta("search_quality.py", sys.argv[1:] if argv is None else argv, s.out.with_suffix(".json"),
                    s.report_only)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()}

    def write(state: Dict[str, Any]) -> None:
        summary = summarise(s, state)
        s.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(s.out) as handle:
            handle.write(render(s, state, summary, meta))
        with atomic_write(s.out.with_suffix(".json")) as handle:
            json.dump({**meta, "settings": settings, "summary": summary, "state": state}, handle, indent=1,
                      default=plain)

    units, state = Units(s.work, lambda: None, read_only=s.report_only), {}
    return run_units(lambda: run_all(s, units, state, write), units, state, write, meta, s.out)


def run_meta(script: str, argv: Sequence[str], out_json: Path, report_only: bool) -> Dict[str, Any]:
    """The command and start date a results file records. ``--report-only`` trains nothing: the command is
    recorded without it, and the start date is that of the run already in ``out_json``, if readable."""
    meta = {"command": shlex.join(["python", f"benchmarks/{script}", *(a for a in argv if a != "--report-only")]),
            "started": now(), "complete": False}
    if report_only:
        try:
            old = json.loads(out_json.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and isinstance(old.get("started"), str):
            meta["started"] = old["started"]
        meta["reported"] = now()
    return meta


def date_line(meta: Dict[str, Any]) -> str:
    """``- date: ...`` of a results file: the run's start, and when ``--report-only`` rewrote it."""
    reported = f" (rewritten from the cache by `--report-only` {meta['reported']})" if meta.get("reported") else ""
    return f"- date: started {meta['started']}{reported}, this file written {now()}"


def run_units(run: Callable[[], None], units: Units, state: Dict[str, Any], write: Callable[[Dict[str, Any]], None],
              meta: Dict[str, Any], out: Path) -> int:
    """``run()`` (every unit), ``meta['complete']`` unless a unit is pending (``--report-only``), the last write."""
    try:
        run()
        meta["complete"] = True
    except Pending as pending:
        print(f"--report-only: stopped at the first unfinished unit ({pending})", flush=True)
    write(state)
    print(f"units: {units.ran} run, {units.cached} cached; wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
