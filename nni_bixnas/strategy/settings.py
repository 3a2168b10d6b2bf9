"""Training settings of units: the experiment's evaluator supplies them, a strategy may override them.

The units build their own evaluator (a ``FunctionalEvaluator`` around a job body of
:mod:`nni_bixnas.strategy.units`); what they take from the user's evaluator is only its training
arguments, the keys of :data:`TRAINING_KEYS`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.space import ExecutableModelSpace

from nni_bixnas._checks import known_keys

__all__ = ["TRAINING_KEYS", "check_training", "training_settings", "require_data"]

#: Arguments of the one training loop (:func:`nni_bixnas.training.fit`) a unit may take from the
#: experiment's evaluator (:func:`nni_bixnas.training.train_and_report`).
TRAINING_KEYS = ("data", "batch_size", "seed", "split_seed", "lr", "patch_size", "resize", "val_fraction", "precision",
                 "accelerator", "devices", "channels_last", "num_threads")


def check_training(settings: Any) -> Dict[str, Any]:
    """``settings`` as a dict of known training settings (``None`` is empty), else a clear error."""
    if settings is not None and not isinstance(settings, Mapping):
        raise ValueError(f"training must be a dict of training settings, got {type(settings).__name__}")
    from nni_bixnas.training.evaluator import check_arguments

    settings = dict(settings or {})
    known_keys("training setting(s)", settings, TRAINING_KEYS)
    check_arguments(settings, prefix="training.")
    return settings


def training_settings(model_space: ExecutableModelSpace,
                      overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Training settings for units: the evaluator's (if it is a ``FunctionalEvaluator``), then ``overrides``.

    So a strategy trains on the data the experiment's evaluator names, unless told otherwise.
    """
    settings: Dict[str, Any] = {}
    evaluator = getattr(model_space, "evaluator", None)
    if isinstance(evaluator, FunctionalEvaluator):
        settings.update({k: v for k, v in evaluator.arguments.items() if k in TRAINING_KEYS})
    settings.update(overrides or {})
    return check_training(settings)


def require_data(settings: Mapping[str, Any], who: str) -> str:
    """The ``data`` spec of ``settings``; a clear error, before any training, when there is none.

    A strategy whose evaluator names no data must not quietly train on the embedded synthetic tiles.
    """
    data = settings.get("data")
    if not isinstance(data, str) or not data.strip():
        raise ValueError(
            f"{who}: no training data: the experiment's evaluator names no 'data' and the strategy's training "
            "settings set none; pass make_evaluator(data='monuseg:PATH') (or training={'data': ...}), "
            "or data='default' for the embedded synthetic tiles"
        )
    return data
