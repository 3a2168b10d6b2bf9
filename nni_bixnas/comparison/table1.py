"""The paper's Table 1 as one call: every model trained with one recipe and the same seeds on one fixed
train/validation split, scored on a test set and on TNBC (transfer: nothing is trained on it), with params,
MACs and the paired two-tailed t-test of BiX-Net against each other model.

``out_dir`` holds::

    settings.json            the recipe (data, test, tnbc, epochs, batch, crops, lr, split); a rerun must
                             give the same one (models and seeds may change)
    runs/<model>_s<seed>/    a :func:`~nni_bixnas.training.fit` run folder (``bixnas evaluate``/``compare``
                             read it), plus table1_result.json: its scores, written last
    table1.md, table1.json   the table, rewritten after every run (a partial table lists what is left)

Resume: a run whose ``table1_result.json`` is there is not redone; an interrupted training resumes from its
``last.ckpt`` (exactly, see :func:`~nni_bixnas.training.fit`); a finished training not yet scored is scored.

Protocol. Each run's checkpoint is its best-validation-IoU epoch; it is scored on ``test`` (every image), or,
when no test set is given, on the validation part of the split: the images that also chose the checkpoint,
an optimistic estimate (the authors' code selects on its test set too), said in the table. IoU and Dice are
per-image means (:func:`~nni_bixnas.training.evaluate`); mean ± sample std over seeds. Params and MACs are
counted at ``1 x C x 512 x 512`` (the paper's convention).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from nni_bixnas._checks import an_int, one_of, optional_int, positive_int
from nni_bixnas.comparison.stats import paired_test, summarize
from nni_bixnas.settings import TrainingSettings, check_setting
from nni_bixnas.utils import PathLike, atomic_write, changed_settings

__all__ = ["LABELS", "PAPER_ORDER", "build_report", "format_table", "run_table1"]

_log = logging.getLogger("nni_bixnas.comparison.table1")

#: The rows of the paper's Table 1 that are built here, in its order (MS-NAS is not: its cells are unpublished).
PAPER_ORDER = ("unet", "r2unet", "bionet", "nasunet", "autodeeplab", "bionet_pp", "bixnet")
LABELS = {"unet": "U-Net", "r2unet": "R2U-Net", "bionet": "BiO-Net", "nasunet": "NAS-UNet",
          "autodeeplab": "Auto-DeepLab", "bionet_pp": "BiO-Net++", "bixnet": "BiX-Net"}
KINDS = {"unet": "hand-designed", "r2unet": "hand-designed", "bionet": "hand-designed", "nasunet": "NAS",
         "autodeeplab": "NAS", "bionet_pp": "supernet", "bixnet": "BiX-NAS"}
REFERENCE = "bixnet"
RECIPE_KEYS = ("data", "test", "tnbc", "epochs", "batch_size", "patch_size", "resize", "lr", "split_seed",
               "val_fraction")
METRICS = {name: name for name in ("test_iou", "test_dice", "tnbc_iou", "tnbc_dice")}
SETTINGS_NAME, RESULT_NAME, TABLE_NAME = "settings.json", "table1_result.json", "table1"
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


# ---------------------------------------------------------------------------------------------------
# options, checked before anything is trained or written


def _models(models: Optional[Sequence[str]]) -> List[str]:
    from nni_bixnas.models import list_models

    if models is None:
        return [m for m in PAPER_ORDER if m in list_models()]
    if isinstance(models, str) or not models:
        raise ValueError(f"models must be a non-empty list of model names, got {models!r}")
    for name in models:
        if name not in list_models():
            raise ValueError(f"unknown model {name!r} in models; available: {', '.join(list_models())}")
    if len(set(models)) != len(models):
        raise ValueError(f"models lists a model twice: {list(models)}")
    return list(models)


def _seeds(seeds: Sequence[int]) -> List[int]:
    if isinstance(seeds, (str, int)) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of ints, got {seeds!r}")
    seeds = [an_int("seeds", s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds lists a seed twice: {seeds}")
    return seeds


def _recipe(data, test, tnbc, epochs, batch_size, patch_size, resize, lr, split_seed, val_fraction) -> Dict:
    for name, spec in (("data", data), ("test", test), ("tnbc", tnbc)):
        if spec is not None and (not isinstance(spec, str) or not spec.strip()):
            raise ValueError(f"{name} must be a data spec string (e.g. 'monuseg:PATH'), got {spec!r}")
    for name, value in (("patch_size", patch_size), ("resize", resize)):
        if optional_int(name, value) is not None:
            positive_int(name, value)
    val_fraction = check_setting("val_fraction", val_fraction)
    if val_fraction == 0:
        raise ValueError("val_fraction must be > 0: each run's checkpoint is chosen on the validation part")
    return {"data": data, "test": test, "tnbc": tnbc, "epochs": positive_int("epochs", epochs),
            "batch_size": check_setting("batch_size", batch_size), "patch_size": patch_size, "resize": resize,
            "lr": check_setting("lr", lr), "split_seed": check_setting("split_seed", split_seed),
            "val_fraction": val_fraction}


def _named(field: str, spec: str, build):
    """``build()``, its ``ValueError``/``FileNotFoundError`` prefixed with the option and the spec."""
    try:
        return build()
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"{field} {spec!r}: {err}") from None


def _preflight(recipe: Dict, models: List[str]) -> Dict[str, Any]:
    """Load every data set, check every model's input sizes, count params/MACs: ``{'split', 'complexity'}``."""
    import torch

    from nni_bixnas.data import build_datasets, build_eval_dataset
    from nni_bixnas.models import create_model
    from nni_bixnas.profile import count_complexity
    from nni_bixnas.training.input_size import check_model_input

    _, _, info = _named("data", recipe["data"], lambda: build_datasets(
        recipe["data"], val_fraction=recipe["val_fraction"], split_seed=recipe["split_seed"],
        patch_size=recipe["patch_size"], resize=recipe["resize"]))
    for field in ("test", "tnbc"):
        spec = recipe[field]
        if spec is None:
            continue
        _, other = _named(field, spec, lambda: build_eval_dataset(spec, resize=recipe["resize"]))
        if (other.in_channels, other.num_classes) != (info.in_channels, info.num_classes):
            raise ValueError(f"{field} {spec!r} has {other.in_channels} channel(s) and {other.num_classes} class(es), "
                             f"the training data {info.in_channels} and {info.num_classes}")
    complexity = {}
    for name in models:
        with torch.device("meta"):  # sizes and counts need no weights: no memory, no 512x512 CPU forwards
            model = create_model(name, in_channels=info.in_channels, num_classes=info.num_classes)
        check_model_input(model, name, info, recipe["batch_size"])
        cx = count_complexity(model, input_size=(512, 512), in_channels=info.in_channels)
        complexity[name] = {"params": cx.params, "macs": cx.macs}
    split = {"train_items": info.n_train, "val_items": info.n_val, "val_sources": list(info.val_sources),
             "in_channels": info.in_channels}
    return {"split": split, "complexity": complexity}


def _check_settings(out: Path, recipe: Dict) -> None:
    details = changed_settings(out / SETTINGS_NAME, RECIPE_KEYS, recipe,
                               "{path} is not valid JSON ({err}); restore it, or use another out_dir (--out)")
    if details:
        raise ValueError(f"{out} holds a Table 1 of other settings ({details}); rerun with the same settings "
                         "(models and seeds may change), or use another out_dir (--out)")


# ---------------------------------------------------------------------------------------------------
# one run: train (or resume), score, record


def _read_result(path: Path, model: str, seed: int, recipe: Dict) -> Optional[Dict[str, Any]]:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent (written last, atomically): the run is not finished
    recorded = (result.get("model"), result.get("seed"), result.get("settings")) if isinstance(result, dict) else None
    if recorded != (model, seed, recipe):
        raise ValueError(f"{path} is not a result of {model} seed {seed} with these settings; remove it to redo "
                         "the run, or use another out_dir (--out)")
    return result


def _trained_epochs(run_dir: Path) -> int:
    try:
        history = json.loads((run_dir / "history.json").read_text())["history"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return max((r.get("epoch", 0) for r in history), default=0) if (run_dir / "checkpoints/best.ckpt").is_file() else 0


def _scores(scores: Mapping[str, Any]) -> Dict[str, Any]:
    keys = ("iou", "dice", "iou_batch_pooled", "dice_batch_pooled", "images", "data", "split")
    return {k: scores[k] for k in keys}


def _run_one(out: Path, model: str, seed: int, recipe: Dict, where: str, accelerator: str,
             num_threads: Optional[int]) -> Dict[str, Any]:
    from nni_bixnas import training

    run_dir = out / "runs" / f"{model}_s{seed}"
    result = _read_result(run_dir / RESULT_NAME, model, seed, recipe)
    if result is not None:
        _log.info("table1 %s %s seed %d: finished earlier, not redone (%s)", where, model, seed, run_dir)
        return result
    epochs = recipe["epochs"]
    if _trained_epochs(run_dir) >= epochs:
        _log.info("table1 %s %s seed %d: trained earlier, scoring it", where, model, seed)
    else:
        _log.info("table1 %s %s seed %d: training %d epoch(s) in %s", where, model, seed, epochs, run_dir)
        settings = TrainingSettings(data=recipe["data"], seed=seed, lr=recipe["lr"], batch_size=recipe["batch_size"],
                                    patch_size=recipe["patch_size"], resize=recipe["resize"],
                                    split_seed=recipe["split_seed"], val_fraction=recipe["val_fraction"],
                                    accelerator=accelerator, num_threads=num_threads)
        training.fit(model, settings=settings, max_epochs=epochs, out_dir=run_dir, progress=False)
    summary = json.loads((run_dir / "history.json").read_text())
    best = run_dir / "checkpoints" / "best.ckpt"
    device = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda"}.get(accelerator)
    score = dict(batch_size=recipe["batch_size"], resize=recipe["resize"], device=device, num_threads=num_threads)
    test = recipe["test"]
    started = time.perf_counter()
    result = {
        "model": model, "seed": seed, "settings": recipe, "run": str(run_dir),
        "best_epoch": summary["best_epoch"], "val_iou": summary["best_iou"], "val_dice": summary["best_dice"],
        "train_seconds": sum(r.get("train_seconds", 0.0) for r in summary["history"]),
        "test": _scores(training.evaluate(best, test or recipe["data"], split="all" if test else "val", **score)),
        "tnbc": _scores(training.evaluate(best, recipe["tnbc"], **score)) if recipe["tnbc"] else None,
    }
    result["score_seconds"] = time.perf_counter() - started
    with atomic_write(run_dir / RESULT_NAME) as handle:
        json.dump(result, handle, indent=2)
    tnbc = result["tnbc"]
    _log.info("table1 %s %s seed %d: test IoU %.4f Dice %.4f%s", where, model, seed, result["test"]["iou"],
              result["test"]["dice"], f"; TNBC IoU {tnbc['iou']:.4f} Dice {tnbc['dice']:.4f}" if tnbc else "")
    return result


# ---------------------------------------------------------------------------------------------------
# the table


def _flat(run: Mapping[str, Any]) -> Dict[str, Any]:
    flat = {"seed": run["seed"]}
    for part in ("test", "tnbc"):
        for metric in ("iou", "dice"):
            flat[f"{part}_{metric}"] = run[part][metric] if run.get(part) else None
    return flat


def build_report(recipe: Mapping[str, Any], models: Sequence[str], seeds: Sequence[int], runs: List[Dict[str, Any]],
                 preflight: Mapping[str, Any]) -> Dict[str, Any]:
    """The table as a dict: ``settings``, ``split``, ``rows`` (per model: seeds done, mean ± std of
    ``test_iou``/``test_dice``/``tnbc_iou``/``tnbc_dice``, params, MACs, the paper's figures), ``tests`` (BiX-Net
    against each other model, paired by seed), ``runs`` and ``missing`` (``[model, seed]`` still to do)."""
    from nni_bixnas.models.registry import paper_figures

    by_model = {m: [_flat(r) for r in runs if r["model"] == m] for m in models}
    rows = []
    for name in models:
        summary = summarize(name, by_model[name], METRICS)
        paper = paper_figures(name) or {}
        rows.append({**summary, "model": name, "label": LABELS.get(name, name), "kind": KINDS.get(name),
                     **preflight["complexity"][name], "paper_params": paper.get("params"),
                     "paper_macs": paper.get("macs")})
    tests = []
    for name in models if REFERENCE in models else ():
        if name == REFERENCE:
            continue
        common = sorted({r["seed"] for r in by_model[REFERENCE]} & {r["seed"] for r in by_model[name]})
        test = {"a": REFERENCE, "b": name, "kind": KINDS.get(name)}
        if len(common) >= 2:
            test.update(paired_test(by_model[REFERENCE], by_model[name], METRICS, (REFERENCE, name)))
        else:
            test.update({"paired_seeds": common, "note": "a paired t-test needs 2 or more seeds done for both"})
        tests.append(test)
    done = {(r["model"], r["seed"]) for r in runs}
    return {"settings": dict(recipe), "seeds": list(seeds), "split": preflight["split"], "rows": rows, "tests": tests,
            "runs": runs, "missing": [[m, s] for m in models for s in seeds if (m, s) not in done]}


def _ms(stat: Optional[Mapping[str, float]]) -> str:
    return "—" if stat is None else f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def _diff(test: Mapping[str, Any], metric: str) -> str:
    r = test.get(metric)
    if r is None:
        return "—"
    return f"{r['mean_diff']:+.4f} (p = {'n/a' if r['p'] is None else format(r['p'], '.3g')})"


def _score(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.4f}"


def _setting_lines(report: Mapping[str, Any]) -> List[str]:
    s, split, runs = report["settings"], report["split"], report["runs"]
    images = {part: runs[0][part]["images"] for part in ("test", "tnbc") if runs and runs[0].get(part)}
    crops = f"random {s['patch_size']}x{s['patch_size']} training crops" if s["patch_size"] else "whole items"
    size = f"every patch resized to {s['resize']}x{s['resize']}" if s["resize"] else "full patches"
    test = (f"`{s['test']}` ({images.get('test', '?')} images)" if s["test"] else
            f"the validation part of the split ({split['val_items']} items), which also chose each run's checkpoint: "
            "an optimistic estimate")
    tnbc = f"`{s['tnbc']}` ({images.get('tnbc', '?')} images)" if s["tnbc"] else "not given (— in the table)"
    return [
        f"- trained on `{s['data']}`: {split['train_items']} training / {split['val_items']} validation items (split "
        f"by source image, split seed {s['split_seed']}, validation fraction {s['val_fraction']:g}), the same for "
        "every model and seed",
        f"- recipe: {s['epochs']} epoch(s) (the paper: 300), Adam lr {s['lr']:g} with 1/(1+3e-3·epoch) decay, BCE, "
        f"batch {s['batch_size']}, {crops}, {size}; seeds {', '.join(map(str, report['seeds']))}",
        f"- test set: {test}",
        f"- TNBC, the transfer set (nothing trained on it): {tnbc}",
        "- IoU and Dice: per-image means over the set, of each run's best-validation-IoU checkpoint; mean ± sample "
        "std over seeds. Params and MACs of the network at 1x"
        f"{split['in_channels']}x512x512 (the paper's convention), beside the paper's figures",
    ]


def format_table(report: Mapping[str, Any]) -> str:
    """Markdown of :func:`build_report`: settings, the table, the t-tests, every run."""
    lines = ["# Table 1: every model with one recipe", "", *_setting_lines(report), "",
             "| model | seeds | test IoU | test Dice | TNBC IoU | TNBC Dice | params | GMACs | paper params "
             "| paper GMACs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        cells = [_ms(r[m]) for m in METRICS] + [f"{r['params'] / 1e6:.2f}M", f"{r['macs'] / 1e9:.2f}"]
        paper = r["paper_params"] is not None and r["paper_macs"] is not None
        cells += [f"{r['paper_params'] / 1e6:.2f}M", f"{r['paper_macs'] / 1e9:.2f}"] if paper else ["—", "—"]
        lines.append(f"| {r['label']} (`{r['model']}`) | {', '.join(map(str, r['seeds'])) or '—'} | "
                     + " | ".join(cells) + " |")
    if report["tests"]:
        lines += ["", "Paired two-tailed t-test of BiX-Net against each model over seeds (the paper reports it "
                  "against the NAS baselines): mean difference BiX-Net − model (p-value; t in table1.json).", "",
                  "| BiX-Net vs | kind | paired seeds | test IoU | test Dice | TNBC IoU | TNBC Dice |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for t in report["tests"]:
            cells = [_diff(t, m) for m in METRICS] if "note" not in t else [t["note"], "", "", ""]
            lines.append(f"| {LABELS.get(t['b'], t['b'])} | {t['kind']} | {', '.join(map(str, t['paired_seeds']))} | "
                         + " | ".join(cells) + " |")
    lines += ["", "Runs (best epoch and validation IoU chose the checkpoint):", "",
              "| model | seed | best epoch | val IoU | test IoU | test Dice | TNBC IoU | TNBC Dice | train s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in report["runs"]:
        flat = _flat(run)
        lines.append(f"| {run['model']} | {run['seed']} | {run['best_epoch']} | {_score(run['val_iou'])} | "
                     + " | ".join(_score(flat[m]) for m in METRICS) + f" | {run['train_seconds']:.1f} |")
    if report["missing"]:
        lines += ["", "Still to do (rerun the same command): "
                  + ", ".join(f"{m} seed {s}" for m, s in report["missing"])]
    return "\n".join(lines) + "\n"


def _write_table(out: Path, report: Mapping[str, Any]) -> None:
    with atomic_write(out / f"{TABLE_NAME}.json") as handle:
        json.dump(report, handle, indent=2)
    with atomic_write(out / f"{TABLE_NAME}.md") as handle:
        handle.write(format_table(report))


# ---------------------------------------------------------------------------------------------------
# the entry point


def run_table1(
    data: str = "default",
    *,
    out_dir: PathLike,
    epochs: int,
    seeds: Sequence[int] = (0, 1, 2),
    models: Optional[Sequence[str]] = None,
    test: Optional[str] = None,
    tnbc: Optional[str] = None,
    batch_size: int = 2,
    patch_size: Optional[int] = None,
    resize: Optional[int] = None,
    lr: float = 1e-3,
    split_seed: int = 0,
    val_fraction: float = 0.2,
    accelerator: str = "auto",
    num_threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Train every model of ``models`` for every seed, score each run, and write ``out_dir/table1.{md,json}``.

    Parameters
    ----------
    data : str
        The training data spec (e.g. ``'monuseg:PATH'``), split by source image into train and validation
        (``split_seed``, ``val_fraction``) the same way for every run.
    out_dir : path
        See the module docstring; rerunning with the same settings resumes.
    epochs : int
        Epochs of every run (the paper: 300).
    seeds : sequence of int
        Training seeds (initialisation, shuffling, augmentation), the same for every model.
    models : sequence of str, optional
        Registered model names; default every Table 1 model registered, in the paper's order (:data:`PAPER_ORDER`).
    test : str, optional
        The test set's spec (every image scored); default the validation part of ``data`` (see the module docstring).
    tnbc : str, optional
        The transfer set's spec (e.g. ``'tnbc:PATH'``), scored with the same checkpoints; default none.
    batch_size, patch_size, resize, lr, split_seed, val_fraction
        As in :func:`~nni_bixnas.training.fit`; ``resize`` also applies to the test and TNBC images.
    accelerator : {'auto', 'cpu', 'gpu', 'cuda'}
        Where to train and score.
    num_threads : int, optional
        torch CPU threads while training and scoring (1 is often faster on a shared machine).

    Returns
    -------
    dict
        :func:`build_report`'s table.

    Raises
    ------
    ValueError, FileNotFoundError
        For bad options, missing or unreadable data, input sizes a model cannot take, or an ``out_dir`` of other
        settings: checked before anything is trained or written.
    """
    recipe = _recipe(data, test, tnbc, epochs, batch_size, patch_size, resize, lr, split_seed, val_fraction)
    models, seeds = _models(models), _seeds(seeds)
    one_of("accelerator", accelerator, ACCELERATORS)
    if num_threads is not None:
        check_setting("num_threads", num_threads)
    out = Path(out_dir)
    _check_settings(out, recipe)
    preflight = _preflight(recipe, models)
    with atomic_write(out / SETTINGS_NAME) as handle:
        json.dump(recipe, handle, indent=2)
    plan = [(m, s) for m in models for s in seeds]
    _log.info("table1: %d model(s) x %d seed(s) = %d run(s) of %d epoch(s) in %s", len(models), len(seeds), len(plan),
              recipe["epochs"], out)
    runs: List[Dict[str, Any]] = []
    for i, (model, seed) in enumerate(plan, 1):
        runs.append(_run_one(out, model, seed, recipe, f"[{i}/{len(plan)}]", accelerator, num_threads))
        report = build_report(recipe, models, seeds, runs, preflight)
        _write_table(out, report)
    _log.info("table1: written %s and %s", out / f"{TABLE_NAME}.md", out / f"{TABLE_NAME}.json")
    return report
