"""Table 2 of the paper: k-fold cross-validation by patient on CHAOS MR, IoU and Dice per organ.

One model is trained on all four organs at once (multi-class logits, as the paper does), once per fold and
seed, with the one training loop :func:`nni_bixnas.training.fit`, in ``OUT/seed_<s>/fold_<k>/`` (its
``checkpoints/``, ``run.json``, ``history.json``). Each fold's best-validation-IoU checkpoint (or its last) is
then scored on the fold's held-out patients, organ by organ
(:meth:`~nni_bixnas.metrics.SegmentationMetrics.compute_per_class`), into ``fold.json`` beside them. Folds
split by patient (:func:`nni_bixnas.data.build.kfold_sources`): every slice of every series of a patient
(T1-DUAL in- and out-phase, T2-SPIR) is in the same fold.

Resume: a fold whose ``fold.json`` holds the same configuration is not trained again; an interrupted one
continues from its ``last.ckpt`` (``fit``'s exact resume). After every fold ``OUT/cv.json`` and ``OUT/cv.md``
are rewritten atomically, so an interrupted run leaves a table of the folds done so far.

Summary: an organ's score in a fold is the mean over the seeds; the table gives its mean ± std (sample std,
``n - 1``) over the folds, as Table 2 does over its 5 folds.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from nni_bixnas._checks import is_int, one_of, out_folder, positive_int
from nni_bixnas.comparison.stats import mean_std
from nni_bixnas.settings import TrainingSettings, check_setting
from nni_bixnas.utils import PathLike, atomic_write

__all__ = ["TABLE2_ORGANS", "FOLD_NAME", "cross_validate", "fold_plan", "score_checkpoint", "summarize",
           "format_markdown"]

_log = logging.getLogger("nni_bixnas.comparison")

# Table 2's columns, by the CHAOS class names of nni_bixnas.data.chaos
TABLE2_ORGANS = ("liver", "left_kidney", "right_kidney", "spleen")
FOLD_NAME = "fold.json"
CHECKPOINTS = ("best", "last")
METRIC = "per-image mean over the validation slices where the organ is in the prediction or the ground truth"


def _check_options(data: str, model: str, folds: int, epochs: int, seeds: Sequence[int], batch_size: int,
                   lr: float, split_seed: int, resize: Optional[int], num_threads: Optional[int],
                   model_kwargs: Optional[Mapping[str, Any]]) -> List[int]:
    from nni_bixnas.data.build import KFOLD_SCHEMES
    from nni_bixnas.data.spec import parse_data_spec
    from nni_bixnas.models import list_models

    scheme = parse_data_spec(data).scheme
    if scheme not in KFOLD_SCHEMES:
        specs = ", ".join(f"{s}:PATH" for s in KFOLD_SCHEMES)
        raise ValueError(f"data must be a spec of a dataset split by patient ({specs}) for cross-validation, "
                         f"got {data!r}")
    if model not in list_models():
        raise ValueError(f"unknown model {model!r}; available: {', '.join(list_models())}")
    if not is_int(folds) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    positive_int("epochs", epochs)
    for name, value in (("batch_size", batch_size), ("lr", lr), ("split_seed", split_seed),
                        ("num_threads", num_threads)):
        check_setting(name, value)
    if resize is not None:
        positive_int("resize", resize)
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise ValueError(f"model_kwargs must be a mapping or None, got {model_kwargs!r}")
    if (not isinstance(seeds, (list, tuple)) or not seeds or not all(is_int(s) for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise ValueError(f"seeds must be a non-empty list of distinct ints, got {seeds!r}")
    return [int(s) for s in seeds]


def fold_plan(data: str, folds: int, split_seed: int = 0, resize=None) -> List[Dict[str, Any]]:
    """The folds of ``data`` without training: ``[{'fold', 'train_patients', 'val_patients', 'n_train',
    'n_val', 'val_dataset', 'class_names'}]``, one per fold, the validation patients of the folds disjoint
    and together every patient. Raises the data's ``ValueError``/``FileNotFoundError`` (e.g. fewer
    patients than folds) before anything is trained."""
    from nni_bixnas.data import build_datasets

    plan = []
    for k in range(folds):
        _, val, info = build_datasets(data, fold=k, n_folds=folds, split_seed=split_seed, resize=resize,
                                      augment=False)
        plan.append({"fold": k, "train_patients": list(info.train_sources), "val_patients": list(info.val_sources),
                     "n_train": info.n_train, "n_val": info.n_val, "val_dataset": val,
                     "class_names": tuple(info.class_names)})
    missing = [name for name in TABLE2_ORGANS if name not in plan[0]["class_names"]]
    if missing:
        raise ValueError(f"{data!r} has classes {list(plan[0]['class_names'])}; Table 2 needs {list(TABLE2_ORGANS)}")
    return plan


def score_checkpoint(checkpoint: PathLike, dataset, *, batch_size: int = 16, device: Optional[str] = None,
                     num_threads: Optional[int] = None) -> Dict[str, Any]:
    """IoU and Dice of a :func:`~nni_bixnas.training.fit` checkpoint on ``dataset``, in all and per class.

    Returns
    -------
    dict
        ``overall`` (:meth:`~nni_bixnas.metrics.SegmentationMetrics.compute`) and ``classes``
        (``{class name: compute_per_class() entry}``, named by the dataset's class names).
    """
    from nni_bixnas.training.checkpoint import load_task
    from nni_bixnas.training.inference import default_device, score_dataset
    from nni_bixnas.training.loop import torch_threads

    task = load_task(checkpoint)
    dev = default_device(device)
    task.to(dev)
    names = dataset.collection.class_names
    with torch_threads(num_threads):
        metrics, _, _ = score_dataset(task, dataset, batch_size, task.threshold, dev)
    per_class = metrics.compute_per_class()
    return {"overall": metrics.compute(), "classes": {names[c]: scores for c, scores in per_class.items()}}


def _plain(value: Any) -> Any:
    """NaN -> ``None`` (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _write_json(path: Path, payload: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(_plain(payload), handle, indent=2, allow_nan=False)
        handle.write("\n")


def _write_report(out_dir: Path, report: Dict[str, Any]) -> None:
    """``cv.json`` and ``cv.md`` of ``report``, unless ``cv.json`` holds a report of the same settings with more
    fold runs: a rerun whose fold fails midway must not turn a finished table into an incomplete one."""
    try:
        old = json.loads((out_dir / "cv.json").read_text())
    except (OSError, ValueError):
        old = None
    if (isinstance(old, dict) and old.get("settings") == _plain(json.loads(json.dumps(report["settings"])))
            and len(old.get("runs") or ()) > len(report["runs"])):
        return
    _write_json(out_dir / "cv.json", report)
    with atomic_write(out_dir / "cv.md") as handle:
        handle.write(format_markdown(report))


def _finished(run_dir: Path, config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The ``fold.json`` of ``run_dir`` when it records ``config``, else ``None``."""
    try:
        record = json.loads((run_dir / FOLD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("config") == config else None


def cross_validate(
    data: str,
    model: str = "bixnet",
    *,
    epochs: int,
    out_dir: PathLike,
    folds: int = 5,
    seeds: Sequence[int] = (0,),
    batch_size: int = 16,
    lr: float = 1e-3,
    split_seed: int = 0,
    resize: Optional[int] = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
    precision: Optional[str] = None,
    accelerator: str = "auto",
    devices: Any = "auto",
    num_threads: Optional[int] = None,
    progress: bool = False,
    checkpoint: str = "best",
) -> Dict[str, Any]:
    """Cross-validate ``model`` on ``data`` by patient and write ``OUT/cv.json`` and ``OUT/cv.md``.

    Parameters
    ----------
    data : str
        ``chaos:PATH``, the CHAOS ``Train_Sets/MR`` folder (see :mod:`nni_bixnas.data.chaos`).
    model : str
        A registry name (``bixnet``, ``bionet``, ``unet``, ...), built with ``model_kwargs``.
    epochs : int
        Training epochs of every fold.
    out_dir : path
        ``seed_<s>/fold_<k>/`` run folders, ``cv.json``, ``cv.md``.
    folds : int
        Number of folds (the paper: 5).
    seeds : sequence of int
        Training seeds; every fold is trained once per seed (the folds depend on ``split_seed`` only).
    batch_size : int
        16, the paper's batch size for CHAOS.
    lr, precision, accelerator, devices, num_threads, progress
        As in :func:`~nni_bixnas.training.fit`.
    split_seed : int
        Seeds the assignment of patients to folds.
    resize : int, optional
        Resize the slices (256 x 256 in the release) to ``resize`` x ``resize``, training and scoring.
    checkpoint : {'best', 'last'}
        Which checkpoint of a fold is scored: the best validation IoU (as ``bixnas train`` keeps; chosen on
        the fold's held-out patients, which are also its validation set) or the last epoch's.

    Returns
    -------
    dict
        The report written to ``cv.json`` (see :func:`summarize`).

    Raises
    ------
    ValueError, FileNotFoundError
        For a bad option or unusable data, before anything is trained.
    """
    seeds = _check_options(data, model, folds, epochs, seeds, batch_size, lr, split_seed, resize, num_threads,
                           model_kwargs)
    one_of("checkpoint", checkpoint, CHECKPOINTS)
    out_folder("out_dir (--out)", out_dir)
    out_dir = Path(out_dir)
    plan = fold_plan(data, folds, split_seed, resize)
    settings = {"model": model, "model_kwargs": dict(model_kwargs or {}), "data": data, "folds": folds,
                "seeds": seeds, "epochs": epochs, "batch_size": batch_size, "lr": lr, "split_seed": split_seed,
                "resize": resize, "checkpoint": checkpoint}
    training = {"precision": precision, "accelerator": accelerator, "devices": devices, "num_threads": num_threads,
                "progress": progress}
    records: List[Dict[str, Any]] = []
    for seed in seeds:
        for fold in plan:
            records.append(_run_fold(out_dir / f"seed_{seed}" / f"fold_{fold['fold']}", fold, seed, settings,
                                     training))
            report = summarize(records, settings)
            _write_report(out_dir, report)
    _log.info("cv: %d fold(s) x %d seed(s) done; %s and %s", folds, len(seeds), out_dir / "cv.json",
              out_dir / "cv.md")
    return report


def _run_fold(run_dir: Path, fold: Mapping[str, Any], seed: int, settings: Mapping[str, Any],
              training: Mapping[str, Any]) -> Dict[str, Any]:
    """Train (or resume) one fold with ``fit``, score its best checkpoint per organ, write ``fold.json``;
    a ``fold.json`` of the same configuration is returned as it is."""
    from nni_bixnas.training import fit

    k, where = fold["fold"], f"seed {seed} fold {fold['fold'] + 1}/{settings['folds']}"
    config = {key: settings[key] for key in ("model", "model_kwargs", "data", "folds", "epochs", "batch_size", "lr",
                                             "split_seed", "resize", "checkpoint")}
    config = json.loads(json.dumps({**config, "seed": seed, "fold": k}))  # as fold.json holds it
    record = _finished(run_dir, config)
    if record is not None:
        _log.info("cv: %s already done (%s), not trained again", where, run_dir / FOLD_NAME)
        return record
    _log.info("cv: %s: training %d epoch(s) on %d slices, validating on %d slices of patient(s) %s",
              where, settings["epochs"], fold["n_train"], fold["n_val"], ", ".join(fold["val_patients"]))
    recipe = TrainingSettings(data=settings["data"], seed=seed, lr=settings["lr"], batch_size=settings["batch_size"],
                              split_seed=settings["split_seed"], resize=settings["resize"],
                              precision=training["precision"], accelerator=training["accelerator"],
                              devices=training["devices"], num_threads=training["num_threads"])
    result = fit(settings["model"], settings=recipe, max_epochs=settings["epochs"], out_dir=run_dir,
                 model_kwargs=settings["model_kwargs"], progress=training["progress"], fold=k,
                 n_folds=settings["folds"])
    scored = result.best_checkpoint if settings["checkpoint"] == "best" else result.last_checkpoint
    scores = score_checkpoint(scored, fold["val_dataset"], batch_size=settings["batch_size"],
                              device="cpu" if training["accelerator"] == "cpu" else None,
                              num_threads=training["num_threads"])
    record = {"config": config, "seed": seed, "fold": k, "val_patients": fold["val_patients"],
              "train_patients": fold["train_patients"], "n_train": fold["n_train"], "n_val": fold["n_val"],
              "best_epoch": result.best_epoch, "checkpoint": str(Path(scored).relative_to(run_dir)),
              "overall": {m: scores["overall"][m] for m in ("iou", "dice")},
              "organs": {name: scores["classes"][name] for name in TABLE2_ORGANS}}
    _write_json(run_dir / FOLD_NAME, record)
    _log.info("cv: %s done (%%): %s", where, "  ".join(
        f"{name} IoU {_pct(record['organs'][name]['iou'])} Dice {_pct(record['organs'][name]['dice'])}"
        for name in TABLE2_ORGANS))
    return record


def summarize(records: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``cv.json`` report of the fold records done so far.

    Returns
    -------
    dict
        ``settings`` (model, data, folds, seeds, epochs, ...), ``metric`` (how the scores are computed),
        ``complete`` (every fold of every seed done), ``organs`` (Table 2's order), ``summary``
        (``{organ: {'iou'|'dice': {'mean', 'std', 'n'}}}`` over the folds' seed means), ``folds`` (per fold:
        ``val_patients``, ``seeds`` done, ``organs`` ``{organ: {'iou', 'dice'}}`` means over those seeds) and
        ``runs`` (every fold record without its ``config``).
    """
    folds = []
    for k in sorted({r["fold"] for r in records}):
        mine = [r for r in records if r["fold"] == k]
        organs = {}
        for name in TABLE2_ORGANS:
            organs[name] = {}
            for metric in ("iou", "dice"):
                values = [r["organs"][name][metric] for r in mine if _finite(r["organs"][name][metric])]
                organs[name][metric] = sum(values) / len(values) if values else None
        folds.append({"fold": k, "val_patients": mine[0]["val_patients"], "n_val": mine[0]["n_val"],
                      "seeds": [r["seed"] for r in mine], "organs": organs})
    summary = {}
    for name in TABLE2_ORGANS:
        summary[name] = {}
        for metric in ("iou", "dice"):
            values = [f["organs"][name][metric] for f in folds if f["organs"][name][metric] is not None]
            summary[name][metric] = {**mean_std(values), "n": len(values)} if values else None
    expected = settings["folds"] * len(settings["seeds"])
    return {"settings": dict(settings), "metric": METRIC, "complete": len(records) == expected,
            "organs": list(TABLE2_ORGANS), "summary": summary, "folds": folds,
            "runs": [{k: v for k, v in r.items() if k != "config"} for r in records]}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _pct(value: Optional[float]) -> str:
    return f"{100 * value:.1f}" if _finite(value) else "n/a"


def _title(organ: str) -> str:
    return organ.replace("_", " ").title()


def format_markdown(report: Mapping[str, Any]) -> str:
    """``cv.md``: the Table 2 row (mean ± std over folds, in %), then every fold."""
    s = report["settings"]
    args = ", ".join(f"{k}={v}" for k, v in s["model_kwargs"].items())
    args = f" ({args})" if args else ""
    resized = f", slices resized to {s['resize']} x {s['resize']}" if s["resize"] else ""
    lines = [f"# CHAOS MR, {s['folds']}-fold cross-validation by patient (Table 2)", "",
             f"Model `{s['model']}`{args} on `{s['data']}`: {s['epochs']} epoch(s), batch {s['batch_size']}, "
             f"lr {s['lr']}, seed(s) {', '.join(map(str, s['seeds']))}, folds from split seed "
             f"{s['split_seed']}{resized}.",
             f"IoU and Dice in %: {report['metric']}, of each fold's {s['checkpoint']} checkpoint; mean ± std over "
             "the folds (each fold: the mean over the seeds).", ""]
    if not report["complete"]:
        done = len(report["runs"])
        lines += [f"**Incomplete**: {done} of {s['folds'] * len(s['seeds'])} fold runs done; rerun the same "
                  "command to continue.", ""]
    header = "".join(f" {_title(o)} mIoU(%) | {_title(o)} DICE(%) |" for o in report["organs"])
    lines += [f"| Method |{header}", "|---|" + "---|" * (2 * len(report["organs"]))]
    cells = []
    for organ in report["organs"]:
        for metric in ("iou", "dice"):
            stats = report["summary"][organ][metric]
            cells.append(f"{100 * stats['mean']:.1f}±{100 * stats['std']:.1f}" if stats else "n/a")
    lines += [f"| {s['model']} | " + " | ".join(cells) + " |", "", "## Per fold", ""]
    header = "".join(f" {_title(o)} IoU | {_title(o)} Dice |" for o in report["organs"])
    lines += [f"| fold | validation patients | slices | seeds |{header}",
              "|---:|---|---:|---|" + "---:|" * (2 * len(report["organs"]))]
    for fold in report["folds"]:
        cells = [_pct(fold["organs"][o][m]) for o in report["organs"] for m in ("iou", "dice")]
        lines.append(f"| {fold['fold']} | {', '.join(fold['val_patients'])} | {fold['n_val']} | "
                     f"{', '.join(map(str, fold['seeds']))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
