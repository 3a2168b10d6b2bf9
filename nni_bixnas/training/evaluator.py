"""The NNI evaluator: train a frozen architecture with :func:`fit` and report IoU, Dice, params, MACs."""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any, Callable, Dict, Mapping, Optional, Union

import nni
import torch.nn as nn
from nni.nas.evaluator import FunctionalEvaluator

from nni_bixnas._checks import a_bool, optional_path, positive_int
from nni_bixnas.settings import SETTING_CHECKS, TrainingSettings
from nni_bixnas.training.loop import fit
from nni_bixnas.training.nni_reporting import NNIReporter, nni_tensorboard_dir
from nni_bixnas.training.trial_runtime.environment import trial_out_dir
from nni_bixnas.utils import seed_everything

_log = logging.getLogger(__name__)


def train_and_score(
    model: nn.Module,
    data: str = "default",
    max_epochs: int = 10,
    batch_size: int = 2,
    seed: int = 0,
    lr: float = 1e-3,
    patch_size: Optional[int] = None,
    out_dir: Optional[str] = None,
    split_seed: int = 0,
    resize: Optional[int] = None,
    val_fraction: float = 0.2,
    precision: Optional[str] = None,
    accelerator: str = "auto",
    devices: Union[int, str] = "auto",
    channels_last: bool = False,
    progress: bool = False,
    num_threads: Optional[int] = None,
    loss: str = "ce",
) -> Dict[str, Any]:
    """Train ``model`` on ``data`` and return its final result (:func:`train_and_report` reports it to NNI).

    Every validation epoch sends ``{'default': val_iou, 'dice': val_dice, 'loss': val_loss}`` with
    ``nni.report_intermediate_result``; the final result is
    ``{'default': best val IoU, 'dice', 'iou_batch_pooled', 'dice_batch_pooled', 'best_epoch',
    'final_iou', 'final_dice', 'final_epoch', 'params', 'macs'}`` (``final_*``: the last epoch's validation
    scores, free of the best-epoch selection), params and MACs counted at 1 x C x 512 x 512 (the paper's convention).
    Outside an NNI trial the reports are only logged.

    Parameters
    ----------
    model : torch.nn.Module
        The frozen architecture NNI passes in (returns logits).
    data : str
        Data spec for :class:`~nni_bixnas.data.SegDataModule`.
    max_epochs, batch_size, seed, lr, val_fraction, precision, accelerator, devices, channels_last, progress
        As in :func:`~nni_bixnas.training.fit`.
    patch_size, resize, split_seed
        Training crop size, explicit downscaling and the seed of the train/validation split (kept fixed
        across training seeds), as in :class:`~nni_bixnas.data.SegDataModule`.
    out_dir : str, optional
        Run folder; default ``$NNI_OUTPUT_DIR/run`` in a trial, else a new temporary folder.
        TensorBoard goes to ``$NNI_OUTPUT_DIR/tensorboard`` in a trial (linked for the web UI).
    num_threads : int, optional
        torch threads of the training; default in an NNI trial ``max(1, cpus // trialConcurrency)``
        unless ``OMP_NUM_THREADS`` is set (see
        :func:`~nni_bixnas.training.trial_runtime.concurrency.default_num_threads`).
        On a machine shared with other work, ``num_threads=1`` is often much faster.
    loss : str
        ``'ce'`` (default, the authors') or ``'dice_ce'`` (cross-entropy plus soft Dice), see
        :class:`~nni_bixnas.training.task.SegmentationTask`.

    Returns
    -------
    dict
        The final result.
    """
    settings = TrainingSettings(data=data, batch_size=batch_size, seed=seed, split_seed=split_seed, lr=lr,
                                patch_size=patch_size, resize=resize, val_fraction=val_fraction, precision=precision,
                                accelerator=accelerator, devices=devices, channels_last=channels_last,
                                num_threads=num_threads, loss=loss)
    return train_and_score_settings(model, settings, max_epochs=max_epochs, out_dir=out_dir, progress=progress)


def train_and_score_settings(model: nn.Module, settings: TrainingSettings, *, max_epochs: int,
                             out_dir: Optional[str] = None, progress: bool = False) -> Dict[str, Any]:
    """:func:`train_and_score` with its training settings as one :class:`~nni_bixnas.settings.TrainingSettings`."""
    from nni_bixnas.profile import count_complexity

    # NNI builds the frozen model before calling us; re-initialise it from the seed so a retraining
    # with the same seed starts from the same weights wherever it runs.
    seed_everything(settings.seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
    out_dir = str(trial_out_dir(out_dir, "run"))
    result = fit(model, settings=settings, max_epochs=max_epochs, out_dir=out_dir, callbacks=[NNIReporter()],
                 progress=progress, tensorboard_dir=nni_tensorboard_dir())
    in_channels = _in_channels(model)
    complexity = count_complexity(copy.deepcopy(model).cpu(), input_size=(512, 512), in_channels=in_channels)
    best, last = result.best_record, (result.history[-1] if result.history else {})
    final = {
        "default": result.best_iou,
        "dice": result.best_dice,
        "iou_batch_pooled": best.get("val_iou_batch_pooled"),
        "dice_batch_pooled": best.get("val_dice_batch_pooled"),
        "best_epoch": result.best_epoch,
        "final_iou": last.get("val_iou"),
        "final_dice": last.get("val_dice"),
        "final_epoch": last.get("epoch"),
        "params": complexity.params,
        "macs": complexity.macs,
    }
    return final


def train_and_report(model: nn.Module, **kwargs: Any) -> Dict[str, Any]:
    """:func:`train_and_score` and ``nni.report_final_result`` of its result: the function of
    :func:`make_evaluator` (keyword arguments those of :func:`train_and_score`)."""
    final = train_and_score(model, **kwargs)
    nni.report_final_result(final)
    return final


train_and_report.__signature__ = inspect.signature(train_and_score)  # its arguments, for users and NNI


def _in_channels(model: nn.Module) -> int:
    declared = getattr(model, "in_channels", None)
    if isinstance(declared, int):
        return declared
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first_conv.in_channels if first_conv is not None else 3


_ARGUMENTS = tuple(inspect.signature(train_and_report).parameters)[1:]


# train_and_report argument -> check(name, value) raising a ValueError that starts with ``name``: the
# training settings' own checks, and those of the run's other arguments
_VALUE_CHECKS: Dict[str, Callable[[str, Any], Any]] = {
    **SETTING_CHECKS,
    "max_epochs": positive_int,
    "out_dir": optional_path,
    "progress": a_bool,
}


def check_arguments(kwargs: Mapping[str, Any], prefix: str = "") -> None:
    """Check the values of :func:`train_and_report` keyword arguments, without training.

    Parameters
    ----------
    kwargs : mapping
        Keyword arguments (unknown names are left to the caller).
    prefix : str
        Put before each argument name in the messages, e.g. ``'classArgs.evaluator_kwargs.'``.

    Raises
    ------
    ValueError
        The first bad value, e.g. ``max_epochs must be a positive int, got 0``.
    """
    for key, value in kwargs.items():
        check = _VALUE_CHECKS.get(key)
        if check is not None:
            check(prefix + key, value)


def make_evaluator(**kwargs: Any) -> FunctionalEvaluator:
    """An NNI ``FunctionalEvaluator`` running :func:`train_and_report` with ``kwargs``.

    Keep ``kwargs`` plain (str/int/float): NNI serialises them into every trial's parameters. Their
    values are checked here (:func:`check_arguments`), and by the ``nnictl`` bridge when an experiment
    starts (``make_evaluator.validate_kwargs``).

    Examples
    --------
    >>> evaluator = make_evaluator(data="monuseg:/data/MoNuSegTrainingData", max_epochs=50, patch_size=256)
    >>> evaluator = make_evaluator(data="default", num_threads=1)  # a CPU machine other work shares

    (``patch_size`` is the training crop; validation runs on the full 512 x 512 patches.)
    """
    unknown = sorted(set(kwargs) - set(_ARGUMENTS))
    if unknown:
        raise ValueError(f"unknown train_and_report argument(s) {unknown}; expected some of {list(_ARGUMENTS)}")
    check_arguments(kwargs)
    return FunctionalEvaluator(train_and_report, **kwargs)


# The bridge checks classArgs.evaluator_kwargs values with this when an experiment starts.
make_evaluator.validate_kwargs = check_arguments
