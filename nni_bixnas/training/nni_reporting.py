"""Reporting to NNI from inside Lightning: per-epoch metrics and the web UI's TensorBoard folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytorch_lightning as pl
import torch

from nni_bixnas.training.trial_runtime.environment import experiment_dir, in_nni_trial, trial_out_dir

__all__ = ["NNIReporter", "in_nni_trial", "link_tensorboard", "nni_tensorboard_dir", "trial_out_dir"]

_log = logging.getLogger(__name__)


def nni_tensorboard_dir() -> Optional[Path]:
    """``$NNI_OUTPUT_DIR/tensorboard`` inside an NNI trial (created, and linked for the web UI), else ``None``.

    NNI 3.0's web UI starts TensorBoard on ``<expdir>/trials/<trial_id>/output/tensorboard`` while the
    local training service runs trials in ``<expdir>/environments/<env_id>/trials/<trial_id>``
    (``nni_node/common/trial_keeper/keeper.js``); the symlink makes the UI's TensorBoard button find
    the events. Other layouts get no link.
    """
    output = os.environ.get("NNI_OUTPUT_DIR")
    if not output or not os.environ.get("NNI_PLATFORM"):
        return None
    tb_dir = Path(output) / "tensorboard"
    tb_dir.mkdir(parents=True, exist_ok=True)
    trial_id = os.environ.get("NNI_TRIAL_JOB_ID")
    expdir = experiment_dir(Path(output))
    if trial_id and expdir is not None:
        link_tensorboard(tb_dir, expdir / "trials" / trial_id / "output" / "tensorboard")
    return tb_dir


def link_tensorboard(target: Path, link: Path) -> None:
    """Create ``link -> target`` unless ``link`` already exists; failures are logged, never raised."""
    try:
        if link.is_symlink() or link.exists():
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.resolve(), target_is_directory=True)
    except OSError as err:
        _log.warning("cannot link %s -> %s for the NNI web UI's TensorBoard: %s", link, target, err)


def _default_report(metric: Dict[str, float]) -> None:
    import nni

    nni.report_intermediate_result(metric)


class NNIReporter(pl.Callback):
    """Send each validation epoch's metrics to NNI as an intermediate result; inside an NNI trial, end
    the trial when the NNI manager that started it is gone (:mod:`nni_bixnas.training.trial_runtime.manager_watch`).

    The result is ``{'default': <monitor>, <name>: <value>, ...}``, e.g.
    ``{'default': val_iou, 'dice': val_dice, 'loss': val_loss}``. Outside an NNI trial
    ``nni.report_intermediate_result`` only logs, so the callback is harmless there.

    Parameters
    ----------
    monitor : str
        Logged metric reported as ``'default'`` (what NNI's tuners and plots use).
    extra : dict
        ``{report_name: logged_metric}`` sent alongside when present.
    report : callable, optional
        Replaces ``nni.report_intermediate_result`` (e.g. to forward to the outer trial channel from
        inside a one-shot run).
    """

    def __init__(
        self,
        monitor: str = "val_iou",
        extra: Optional[Dict[str, str]] = None,
        report: Optional[Callable[[Dict[str, float]], Any]] = None,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.extra = dict(extra) if extra is not None else {"dice": "val_dice", "loss": "val_loss"}
        self.report = report or _default_report
        self.reported_epochs: list = []
        self._watch = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if in_nni_trial():
            from nni_bixnas.training.trial_runtime.manager_watch import ManagerWatch

            self._watch = ManagerWatch()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._watch is not None:  # a trial whose NNI manager was killed ends, as its dispatcher does
            from nni_bixnas.training.trial_runtime.manager_watch import exit_if_gone

            exit_if_gone(self._watch, _log)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        # Full-precision values from a SegmentationTask; callback_metrics hold float32 tensors.
        metrics = {**trainer.callback_metrics, **(getattr(pl_module, "last_val_metrics", None) or {})}
        if self.monitor not in metrics or trainer.current_epoch in self.reported_epochs:
            return
        result = {"default": _scalar(metrics[self.monitor])}
        result.update({name: _scalar(metrics[key]) for name, key in self.extra.items() if key in metrics})
        self.report(result)
        self.reported_epochs.append(trainer.current_epoch)


def _scalar(value) -> float:
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)
