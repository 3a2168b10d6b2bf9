"""``fit``: train a segmentation network with best/last checkpoints and exact resume."""

from __future__ import annotations

import datetime
import inspect
import json
import logging
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.loggers import TensorBoardLogger

from nni_bixnas._checks import a_bool, out_folder, positive_int
from nni_bixnas.settings import TRAINING_KEYS, TrainingSettings, check_setting
from nni_bixnas.training.callbacks import ChannelsLast, FiniteLossGuard, RunRecorder
from nni_bixnas.training.checkpoint import AtomicCheckpointIO
from nni_bixnas.training.devices import check_devices
from nni_bixnas.training.input_size import check_input_size
from nni_bixnas.training.run_folder import (
    RESTART,
    RUN_NAME,
    check_resume,
    check_writable,
    checkpoint_problem,
    earlier_best,
    removed_unless_started,
    run_folder_errors,
)
from nni_bixnas.training.task import SegmentationTask
from nni_bixnas.training.trial_runtime.concurrency import torch_threads
from nni_bixnas.training.trial_runtime.environment import in_nni_trial
from nni_bixnas.utils import PathLike, atomic_write

_log = logging.getLogger("nni_bixnas.training")


class _DropLightningTips(logging.Filter):
    """Drop Lightning's advertisement for its cloud logger, printed by every ``pl.Trainer``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropLightningTips())

# torch deprecations met inside Lightning, printed once per run: nothing a user of nni_bixnas can act on
_LIBRARY_WARNINGS = (
    r"The number of training batches .* is smaller than the logging interval",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
)


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


def _task(model_or_task, datamodule, lr: Optional[float], model_kwargs: Optional[Mapping[str, Any]],
          loss: Optional[str] = None) -> SegmentationTask:
    if isinstance(model_or_task, SegmentationTask):
        if model_kwargs:
            raise ValueError("model_kwargs apply to a model name only, not to a SegmentationTask")
        if lr is not None and lr != model_or_task.lr:
            raise ValueError(f"lr={lr} conflicts with the task's lr={model_or_task.lr}; set it on the task")
        if loss is not None and loss != model_or_task.loss_kind:
            raise ValueError(f"loss={loss!r} conflicts with the task's loss={model_or_task.loss_kind!r}; "
                             "set it on the task")
        return model_or_task
    info = _data_info(datamodule)
    num_classes = int(getattr(info, "num_classes", 1))
    task_kwargs = {"num_classes": num_classes, "lr": 1e-3 if lr is None else lr, "loss": loss or "ce"}
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
    channels_last: bool = False,
    resume: bool = True,
    callbacks: Sequence[pl.Callback] = (),
    progress: bool = True,
    batch_size: Optional[int] = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
    tensorboard_dir: Optional[PathLike] = None,
    deterministic: Union[bool, str, None] = None,
    num_threads: Optional[int] = None,
    loss: Optional[str] = None,
    settings: Optional[TrainingSettings] = None,
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
    channels_last : bool
        Train with the weights in ``torch.channels_last`` memory format (see
        :class:`~nni_bixnas.training.callbacks.ChannelsLast`); recorded in ``run.json``, not part of a
        resume's identity (it changes rounding only).
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
    num_threads : int, optional
        ``torch.set_num_threads`` for the training (restored afterwards). Default: torch's own (one per
        core), except in an NNI trial without ``OMP_NUM_THREADS``: ``max(1, cpus // trialConcurrency)``
        (:func:`~nni_bixnas.training.trial_runtime.concurrency.default_num_threads`). On a machine that other
        work shares, 1 is often much faster.
    loss : str, optional
        ``'ce'`` (default, the authors') or ``'dice_ce'`` (see :class:`SegmentationTask`); with a task, its own.
    settings : TrainingSettings, optional
        All the training settings at once, instead of ``data``, ``seed``, ``lr``, ``precision``,
        ``accelerator``, ``devices``, ``channels_last``, ``batch_size``, ``num_threads``, ``loss`` and the
        data keywords ``patch_size``, ``resize``, ``split_seed``, ``val_fraction`` (give either, not both).

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
    if settings is not None:
        _no_settings_beside(settings, data=data, seed=seed, lr=lr, precision=precision, accelerator=accelerator,
                            devices=devices, channels_last=channels_last, batch_size=batch_size,
                            num_threads=num_threads, loss=loss, **data_kwargs)
        data, seed, lr, precision = settings.data, settings.seed, settings.lr, settings.precision
        accelerator, devices, channels_last = settings.accelerator, settings.devices, settings.channels_last
        batch_size, num_threads, loss = settings.batch_size, settings.num_threads, settings.loss
        data_kwargs = {**data_kwargs, **{k: v for k, v in settings.data_options().items()
                                         if k not in ("batch_size", "seed")}}
    if num_threads is not None:
        check_setting("num_threads", num_threads)
    check_setting("seed", seed)
    out_folder("out_dir (--out)", out_dir)
    check_devices(accelerator, devices)
    out_dir = Path(out_dir)
    datamodule = _data_module(data, seed, batch_size, data_kwargs)
    pl.seed_everything(seed, workers=True, verbose=False)
    task = _task(model_or_task, datamodule, lr, model_kwargs, loss)
    if not task.hparams.get("model_name"):
        # e.g. a search SuperNet (normal in every NAS trial): its checkpoints are for resuming, not for
        # `bixnas evaluate`/`predict`
        _log.log(logging.DEBUG if in_nni_trial() else logging.INFO,
                 "the model has no registry name: its checkpoints cannot be rebuilt by evaluate/predict")

    info = _data_info(datamodule)
    check_input_size(task, datamodule, info)
    a_bool("channels_last", channels_last)
    config = _run_config(task, data, datamodule, info, data_kwargs, batch_size, seed, max_epochs, precision, devices)
    config["channels_last"] = channels_last
    if task.loss_kind != "ce":
        config["loss"] = task.loss_kind  # absent: 'ce' (run folders from before the option resume)
    recorder = RunRecorder(out_dir, seed=seed)
    ckpt_path = recorder.last_path if resume and recorder.last_path.is_file() else None
    if ckpt_path is not None:
        check_resume(out_dir, config)
        problem = checkpoint_problem(ckpt_path, task)
        if problem:
            raise ValueError(f"cannot resume from {ckpt_path}: {problem}; {RESTART}")
        _log.info("resuming from %s", ckpt_path)
    else:
        kept = earlier_best(out_dir, config, task)
        if kept is not None:
            recorder.keep_best(kept)
            _log.info("keeping %s (epoch %d of the earlier run) until an epoch scores as well",
                      recorder.best_path, recorder.best_epoch)
    if deterministic is None:
        on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        deterministic = False if on_gpu else "warn"
    tb_dir = Path(tensorboard_dir or out_dir / "tensorboard")
    unstarted = removed_unless_started(out_dir, recorder.checkpoint_dir)
    with torch_threads(num_threads), run_folder_errors(out_dir), unstarted:
        check_writable([out_dir, recorder.checkpoint_dir, tb_dir])
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
            callbacks=[recorder, FiniteLossGuard(recorder.last_path), *([ChannelsLast()] if channels_last else []),
                       *callbacks],
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=False,  # RunRecorder writes best/last itself (ties -> later epoch)
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=10,
            deterministic=deterministic,
        )
        with warnings.catch_warnings():
            for message in _LIBRARY_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            trainer.fit(task, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
                        weights_only=True)
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


def _no_settings_beside(settings: TrainingSettings, **given: Any) -> None:
    """A setting given to ``fit`` beside ``settings``: an error (its own keywords count when not at their default)."""
    if not isinstance(settings, TrainingSettings):
        raise ValueError(f"settings must be a TrainingSettings, got {type(settings).__name__}")
    own = inspect.signature(fit).parameters
    beside = [name for name, value in given.items()
              if name in TRAINING_KEYS and (name not in own or value != own[name].default)]
    if beside:
        raise ValueError(f"fit: {', '.join(beside)} given beside settings; set them in the TrainingSettings instead")


def _run_config(task, data, datamodule, info, data_kwargs, batch_size, seed, max_epochs, precision,
                devices) -> Dict[str, Any]:
    """What ``run.json`` records (the :data:`RESUME_KEYS` must match for a resume)."""
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
