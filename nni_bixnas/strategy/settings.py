"""Training settings of units: the experiment's evaluator supplies them, a strategy may override them.

The units build their own evaluator (a ``FunctionalEvaluator`` around a job body of
:mod:`nni_bixnas.strategy.units`); what they take from the user's evaluator is only its training
arguments, the fields of :class:`~nni_bixnas.settings.TrainingSettings`. A unit receives them as
``training=settings.to_dict()`` (plain values: they are the trial's parameters).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.space import ExecutableModelSpace

from nni_bixnas.settings import TRAINING_KEYS, TrainingSettings

__all__ = ["TRAINING_KEYS", "check_training", "named_settings", "training_settings", "require_data"]

_PREFIX = "training."


def check_training(settings: Any) -> Dict[str, Any]:
    """``settings`` (a strategy's overrides: a mapping, a :class:`~nni_bixnas.settings.TrainingSettings` or
    ``None``) as a dict of known, valid training settings, else one clear error naming ``training.<key>``."""
    if isinstance(settings, TrainingSettings):
        return settings.to_dict()
    TrainingSettings.from_mapping(settings, _PREFIX)
    return dict(settings or {})


def named_settings(model_space: ExecutableModelSpace,
                   overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The training settings someone named: the evaluator's (if it is a ``FunctionalEvaluator``), then
    ``overrides``; the settings nobody named are absent (see :func:`training_settings` for all of them)."""
    settings: Dict[str, Any] = {}
    evaluator = getattr(model_space, "evaluator", None)
    if isinstance(evaluator, FunctionalEvaluator):
        settings.update({k: v for k, v in evaluator.arguments.items() if k in TRAINING_KEYS})
    settings.update(overrides or {})
    return check_training(settings)


def training_settings(model_space: ExecutableModelSpace, overrides: Optional[Mapping[str, Any]] = None,
                      who: Optional[str] = None) -> TrainingSettings:
    """The units' :class:`~nni_bixnas.settings.TrainingSettings`: :func:`named_settings`, the defaults for the
    others. With ``who`` (the strategy's name), no named ``data`` is an error (:func:`require_data`).

    So a strategy trains on the data the experiment's evaluator names, unless told otherwise.
    """
    named = named_settings(model_space, overrides)
    if who is not None:
        require_data(named, who)
    return TrainingSettings.from_mapping(named, _PREFIX)


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
