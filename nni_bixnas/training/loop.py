"""``fit``: train a segmentation network with best/last checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import platform
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.loggers import TensorBoardLogger

from nni_bixnas._checks import is_int, positive_int
from nni_bixnas.training.callbacks import BEST_NAME, HISTORY_NAME, FiniteLossGuard, RunRecorder
from nni_bixnas.training.checkpoint import AtomicCheckpointIO
from nni_bixnas.training.task import SegmentationTask
from nni_bixnas.utils import PathLike, atomic_write

_log = logging.getLogger("nni_bixnas.training")

RUN_NAME = "run.json"
# run.json fields that must match for a resume to continue the same run.
_RESUME_KEYS = ("model_name", "model_kwargs", "data", "seed", "split_seed", "lr", "lr_decay", "batch_size")


@dataclass
class TrainResult:
    """Outcome of :func:`fit`. Epochs are counted from 1; ``history`` has one dict per epoch."""

    best_iou: Optional[float]
    best_dice: Optional[float]
    best_epoch: int
    best_checkpoint: Path
    last_checkpoint: Path
    history: List[Dict[str, Any]] = field(default_factory=list)
    out_dir: Path = Path(".")
    best_record: Dict[str, Any] = field(default_factory=dict)


class RunFolderError(OSError, ValueError):
    """The run folder cannot be written (read-only, no space left); a ``ValueError`` for the CLI's one line."""


# errno of a write that fails because of the folder or the disk, not because of the program
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
_RESTART = ("rerun with --no-resume (resume=False) to start afresh in this folder (its best.ckpt is kept until "
            "an epoch scores as well), or restore the file")


def _data_module(data, seed: int, batch_size: Optional[int], data_kwargs: Mapping[str, Any]) -> pl.LightningDataModule:
    if isinstance(data, pl.LightningDataModule):
        if batch_size is not None or data_kwargs:
            raise ValueError(
                "batch_size and data keyword arguments apply to a data spec string only; "
                f"got a {type(data).__name__} instance together with {sorted(data_kwargs) or ['batch_size']}"
            )
        return data
    if not isinstance(data, str):
        raise ValueError(
            f"data must be a spec string (e.g. 'default', 'monuseg:PATH') or a LightningDataModule, got {data!r}"
        )
    from nni_bixnas.data import SegDataModule

    return SegDataModule(data=data, batch_size=2 if batch_size is None else batch_size, seed=seed, **data_kwargs)


def _data_info(datamodule: pl.LightningDataModule):
    info = getattr(datamodule, "info", None)
    if info is None:
        datamodule.setup("fit")
        info = getattr(datamodule, "info", None)
    return info


def _describe_data(datamodule: pl.LightningDataModule) -> Dict[str, Any]:
    kwargs = getattr(datamodule, "trace_kwargs", None)  # present on @nni.trace'd data modules
    if isinstance(kwargs, dict):
        return json.loads(json.dumps(kwargs, default=str))
    return {"class": type(datamodule).__qualname__}


def _task(model_or_task, datamodule, lr: Optional[float],
          model_kwargs: Optional[Mapping[str, Any]]) -> SegmentationTask:
    if isinstance(model_or_task, SegmentationTask):
        if model_kwargs:
            raise ValueError("model_kwargs apply to a model name only, not to a SegmentationTask")
        if lr is not None and lr != model_or_task.lr:
            raise ValueError(f"lr={lr} conflicts with the task's lr={model_or_task.lr}; set it on the task")
        return model_or_task
    info = _data_info(datamodule)
    num_classes = int(getattr(info, "num_classes", 1))
    task_kwargs = {"num_classes": num_classes, "lr": 1e-3 if lr is None else lr}
    if isinstance(model_or_task, str):
        kwargs = {"in_channels": int(getattr(info, "in_channels", 3)), "num_classes": num_classes,
                  **(model_kwargs or {})}
        return SegmentationTask(model_or_task, model_kwargs=kwargs, **task_kwargs)
    if isinstance(model_or_task, nn.Module):
        if model_kwargs:
            raise ValueError("model_kwargs apply to a model name only, not to a model instance")
        return SegmentationTask(model_or_task, **task_kwargs)
    raise ValueError(
        "model_or_task must be a registry name, a torch.nn.Module or a SegmentationTask, "
        f"got {type(model_or_task).__name__}"
    )


def _check_resume(out_dir: Path, config: Dict[str, Any]) -> None:
    path = out_dir / RUN_NAME
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"cannot resume: {path} is not valid JSON ({err}); rerun with --no-resume (resume=False) "
                         "to start afresh in this folder, or restore the file") from None
    changed = [k for k in _RESUME_KEYS if previous.get(k) != config.get(k)]
    if changed:
        details = ", ".join(f"{k}: {previous.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise ValueError(
            f"{out_dir} holds a run with a different configuration ({details}); "
            "resume it with the same settings, or start afresh with resume=False (--no-resume) or another out dir"
        )


def _checkpoint_problem(path: Path, task: SegmentationTask) -> Optional[str]:
    """Why ``path`` cannot be loaded into ``task`` (unreadable, not a training checkpoint, other weights), or None."""
    try:
        checkpoint = AtomicCheckpointIO().load_checkpoint(path)
    except Exception as err:  # torch raises several unrelated types for a damaged file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:200]
        return f"the file cannot be read, it is probably truncated or corrupt ({reason})"
    if not isinstance(checkpoint, dict) or not {"state_dict", "loops"} <= set(checkpoint):
        return "it is not a training checkpoint (no 'state_dict' and 'loops')"
    if getattr(task, "strict_loading", True):
        expected, saved = task.state_dict(), checkpoint["state_dict"]
        differ = sorted(set(expected) ^ set(saved)) or [
            k for k in expected if getattr(saved[k], "shape", None) != expected[k].shape]
        if differ:
            return f"its weights do not fit the model ({len(differ)} parameter(s) differ, e.g. {differ[0]!r})"
    return None


def _earlier_best(out_dir: Path, config: Dict[str, Any], task: SegmentationTask) -> Optional[Dict[str, Any]]:
    """The best-epoch record of an earlier run of the same configuration whose ``best.ckpt`` fits the model."""
    try:
        previous = json.loads((out_dir / RUN_NAME).read_text())
        summary = json.loads((out_dir / HISTORY_NAME).read_text())
    except (OSError, ValueError):
        return None
    best_path = out_dir / "checkpoints" / BEST_NAME
    if any(previous.get(k) != config.get(k) for k in _RESUME_KEYS) or not best_path.is_file():
        return None
    record = summary.get("best_from_earlier_run")
    if not isinstance(record, dict):
        record = next((r for r in summary.get("history", []) if r.get("epoch") == summary.get("best_epoch")), None)
    if not isinstance(record, dict) or not isinstance(record.get("val_iou"), (int, float)):
        return None
    return record if _checkpoint_problem(best_path, task) is None else None


def _size_rule(model: nn.Module):
    """``(divisor, why)`` of the registry networks' input sizes (their deepest map is ``size / divisor``)."""
    from nni_bixnas.models.bionet import BiONet
    from nni_bixnas.models.unet import UNet
    from nni_bixnas.space.bionet_pp import BiONetPlusPlus

    if isinstance(model, UNet):
        return 2**model.levels, f"2 ** levels with levels={model.levels}"
    if isinstance(model, (BiONet, BiONetPlusPlus)):
        return 2 ** (model.levels + 1), f"2 ** (levels + 1) with levels={model.levels}"
    return None


def _check_input_size(task: SegmentationTask, datamodule: pl.LightningDataModule, info) -> None:
    """Inputs must be divisible by the network's depth, and its deepest BatchNorm must see 2+ values a channel."""
    rule, size = _size_rule(task.model), getattr(info, "image_size", None)
    if rule is None or not size:
        return
    (divisor, why), crop = rule, getattr(info, "crop_size", None)
    name = task.hparams.get("model_name") or type(task.model).__name__
    for what, (h, w) in (("training crops (patch_size)" if crop else "items", crop or size), ("items", size)):
        if h % divisor or w % divisor:
            raise ValueError(
                f"{name} needs inputs divisible by {divisor} ({why}), but the {what} of the data are {h}x{w}; "
                f"use a patch_size/resize (--patch-size/--resize) that is a multiple of {divisor}"
            )
    batch_size, n_train = getattr(datamodule, "batch_size", None), getattr(info, "n_train", None)
    if not (is_int(batch_size) and is_int(n_train) and n_train > 0):
        return
    smallest = min(batch_size, n_train % batch_size or batch_size, n_train)
    h, w = crop or size
    if smallest * (h // divisor) * (w // divisor) < 2 and _has_batch_norm(task.model):
        raise ValueError(
            f"{h}x{w} training inputs shrink to 1x1 at the deepest BatchNorm of {name} (divided by {divisor}, "
            f"{why}) and the smallest training batch holds 1 image ({n_train} training items, batch_size "
            f"{batch_size}): one value per channel, which BatchNorm cannot train on; use larger inputs, e.g. "
            f"{2 * divisor}x{2 * divisor} (--patch-size/--resize), or a batch_size >= 2 that leaves no last batch "
            "of one image"
        )


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _shown_path(filename: Any) -> str:
    """``atomic_write``'s temporary ``.NAME.XXXX.tmp`` shown as the file it stands for."""
    path = Path(str(filename))
    match = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", path.name)
    return str(path.with_name(match.group(1)) if match else path)


@contextlib.contextmanager
def _run_folder_errors(out_dir: Path):
    """A write refused by the folder or the disk -> one :class:`RunFolderError` (atomic writes kept the files)."""
    try:
        yield
    except RunFolderError:
        raise
    except OSError as err:
        if err.errno not in _WRITE_ERRNOS:
            raise
        where = _shown_path(os.fsdecode(err.filename)) if err.filename else str(out_dir)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = ("free some space and rerun the same command (it resumes from the last checkpoint), "
                      "or choose another --out (out_dir)")
        else:
            folder = Path(where) if Path(where).is_dir() else Path(where).parent
            advice = f"make {folder} writable, or choose another --out (out_dir)"
        kept = f"; the files already in {out_dir} are intact (every write is atomic)" if out_dir.is_dir() else ""
        target = f"in {where}" if Path(where).is_dir() else where
        error = RunFolderError(f"cannot write {target}: {err.strerror or err}{kept}; {advice}")
        error.errno = err.errno
        raise error from err


def _check_writable(folders: Sequence[Path]) -> None:
    """Create ``folders`` and write a temporary file in each: a read-only one fails here, before training."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(folder)) from err


def fit(
    model_or_task: Union[str, nn.Module, SegmentationTask],
    data: Union[str, pl.LightningDataModule] = "default",
    *,
    max_epochs: int,
    out_dir: PathLike,
    seed: int = 0,
    lr: Optional[float] = None,
    precision: Optional[str] = None,
    accelerator: str = "auto",
    devices: Union[int, str, Sequence[int]] = "auto",
    resume: bool = True,
    callbacks: Sequence[pl.Callback] = (),
    progress: bool = True,
    batch_size: Optional[int] = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
    tensorboard_dir: Optional[PathLike] = None,
    deterministic: Union[bool, str, None] = None,
    **data_kwargs: Any,
) -> TrainResult:
    """Train a segmentation network, keeping the best-validation-IoU and the last checkpoint.

    Parameters
    ----------
    model_or_task : str, torch.nn.Module or SegmentationTask
        A registry name (built after seeding, with ``in_channels``/``num_classes`` from the data and
        ``model_kwargs``), a network, or a ready task (for custom losses/steps).
    data : str or LightningDataModule
        A data spec (``'default'``, ``'monuseg:PATH'``, …) turned into a
        :class:`~nni_bixnas.data.SegDataModule` with ``batch_size`` (default 2), ``seed`` and
        ``data_kwargs`` (``patch_size``, ``val_fraction``, …), or a data module.
    max_epochs : int
        Total epochs of the run (a resumed run continues up to this number).
    out_dir : path
        Run folder: ``checkpoints/{best,last}.ckpt``, ``history.json``, ``run.json``, ``tensorboard/``.
    seed : int
        Seeds model init (for a registry name), the data split/shuffle and every epoch's RNG stream.
    lr : float, optional
        Adam learning rate, default 1e-3 (only with a model name or module).
    precision : str, optional
        Lightning precision, e.g. ``'bf16-mixed'`` or ``'16-mixed'`` on a GPU; default ``'32-true'``.
    accelerator, devices
        Passed to ``pl.Trainer`` (several ``devices`` run data-parallel).
    resume : bool
        Continue from ``out_dir/checkpoints/last.ckpt`` when it exists (same result as never stopping); a
        truncated or corrupt one is an error. ``False`` starts at epoch 1: the old ``last.ckpt`` is removed
        (a crash in the first epoch would otherwise resume it under the new ``run.json``), and when the
        folder holds an earlier run of the same configuration its ``best.ckpt`` stays the best until an
        epoch scores as well (``history.json`` then says ``best_from_earlier_run``).
    callbacks : sequence of pl.Callback
        Extra callbacks, e.g. :class:`~nni_bixnas.training.nni_reporting.NNIReporter`.
    progress : bool
        Show Lightning's progress bar.
    model_kwargs : mapping, optional
        Extra ``create_model`` arguments when ``model_or_task`` is a name.
    tensorboard_dir : path, optional
        Where TensorBoard events go; default ``out_dir/tensorboard``.
    deterministic : bool or 'warn', optional
        Passed to ``pl.Trainer``; default ``'warn'`` on CPU (cheap there) and off on GPUs.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDiverged
        (a ``FloatingPointError`` and a ``ValueError``) When a training loss is NaN/inf or explodes (see
        :class:`~nni_bixnas.training.callbacks.FiniteLossGuard`); the last checkpoint stays on disk.
    RunFolderError
        (an ``OSError`` and a ``ValueError``) When ``out_dir`` is read-only or the disk is full; the files
        already there are kept (every write is atomic).
    ValueError
        For bad arguments, input sizes the network cannot take (checked before anything is written),
        an unreadable ``last.ckpt`` on resume, or when ``out_dir`` holds a run with a different configuration.
    """
    positive_int("max_epochs", max_epochs)
    if not is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    out_dir = Path(out_dir)
    datamodule = _data_module(data, seed, batch_size, data_kwargs)
    pl.seed_everything(seed, workers=True, verbose=False)
    task = _task(model_or_task, datamodule, lr, model_kwargs)
    if not task.hparams.get("model_name"):
        # e.g. a search SuperNet: its checkpoints are for resuming, not for `bixnas evaluate`/`predict`
        _log.info("the model has no registry name: its checkpoints cannot be rebuilt by evaluate/predict")

    info = _data_info(datamodule)
    _check_input_size(task, datamodule, info)
    config = _run_config(task, data, datamodule, info, data_kwargs, batch_size, seed, max_epochs, precision, devices)
    recorder = RunRecorder(out_dir, seed=seed)
    ckpt_path = recorder.last_path if resume and recorder.last_path.is_file() else None
    if ckpt_path is not None:
        _check_resume(out_dir, config)
        problem = _checkpoint_problem(ckpt_path, task)
        if problem:
            raise ValueError(f"cannot resume from {ckpt_path}: {problem}; {_RESTART}")
        _log.info("resuming from %s", ckpt_path)
    else:
        kept = _earlier_best(out_dir, config, task)
        if kept is not None:
            recorder.keep_best(kept)
            _log.info("keeping %s (epoch %d of the earlier run) until an epoch scores as well",
                      recorder.best_path, recorder.best_epoch)
    if deterministic is None:
        on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        deterministic = False if on_gpu else "warn"
    tb_dir = Path(tensorboard_dir or out_dir / "tensorboard")
    with _run_folder_errors(out_dir):
        _check_writable([out_dir, recorder.checkpoint_dir, tb_dir])
        with atomic_write(out_dir / RUN_NAME) as handle:
            json.dump(config, handle, indent=2)
        if ckpt_path is None:
            # a crash before the first epoch ends must not resume the earlier run under this run.json
            recorder.last_path.unlink(missing_ok=True)
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            precision=precision or "32-true",
            default_root_dir=str(out_dir),
            logger=TensorBoardLogger(save_dir=str(tb_dir), name="", version=""),
            callbacks=[recorder, FiniteLossGuard(recorder.last_path), *callbacks],
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=False,  # RunRecorder writes best/last itself (ties -> later epoch)
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=10,
            deterministic=deterministic,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore",
                                    message=r"The number of training batches .* is smaller than the logging interval")
            trainer.fit(task, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
        if recorder.history and trainer.is_global_zero:
            recorder.write_history()  # again: a resume after a failed history.json write trains no epoch
    best = recorder.best_record
    return TrainResult(
        best_iou=best.get("val_iou"),
        best_dice=best.get("val_dice"),
        best_epoch=recorder.best_epoch,
        best_checkpoint=recorder.best_path,
        last_checkpoint=recorder.last_path,
        history=list(recorder.history),
        out_dir=out_dir,
        best_record=dict(best),
    )


def _run_config(task, data, datamodule, info, data_kwargs, batch_size, seed, max_epochs, precision,
                devices) -> Dict[str, Any]:
    """What ``run.json`` records (the :data:`_RESUME_KEYS` must match for a resume)."""
    config = {
        "model_name": task.hparams.get("model_name"),
        "model_kwargs": task.hparams.get("model_kwargs"),
        "data": data if isinstance(data, str) else _describe_data(datamodule),
        "data_kwargs": json.loads(json.dumps(dict(data_kwargs), default=str)),
        "batch_size": batch_size if isinstance(data, str) else getattr(datamodule, "batch_size", None),
        "seed": seed,
        # the split is recorded so that every unit of a search can be checked to validate on the same items
        "split_seed": getattr(datamodule, "split_seed", None),
        "val_sources": list(getattr(info, "val_sources", ()) or ()),
        "max_epochs": max_epochs,
        "lr": task.lr,
        "lr_decay": task.lr_decay,
        "precision": precision or "32-true",
        "devices": devices if isinstance(devices, (int, str)) else list(devices),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "pytorch_lightning": pl.__version__,
                     "python": platform.python_version()},
    }
    if isinstance(data, str) and config["batch_size"] is None:
        config["batch_size"] = 2
    return config
