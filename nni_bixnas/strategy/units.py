"""Expensive units of work (a SuperNet training, a Phase 2 stage, a retraining) as NNI engine jobs.

A unit is submitted like any NNI trial: an :class:`~nni.nas.space.ExecutableModelSpace` whose evaluator
is a :class:`~nni.nas.evaluator.FunctionalEvaluator` running ``function(model, **kwargs)``. The same
strategy therefore runs in-process (``SequentialExecutionEngine``, ``NasExperiment`` from Python) and as
trials of a training service (``nnictl`` through :mod:`nni_bixnas.experiment`). The function reports its
result with ``nni.report_final_result(dict)``; :class:`UnitRunner` reads the raw dict from the
``FinalMetric`` event (``model.metric`` is canonicalised to a float) and tolerates a metric that arrives
after ``TrainingEnd``.

Keyword arguments must stay small and plain (numbers, strings, lists, dicts; classes and functions by
reference): they travel as trial parameters (``shared/notes/nni-3.0.md``, bug (a)).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from nni.mutable import Sample
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ExecutableModelSpace, ModelStatus

_logger = logging.getLogger(__name__)

__all__ = [
    "UnitRunner", "UnitFailed", "space_reference", "build_space", "inner_module", "space_module", "narrow_space",
    "training_settings", "require_data", "add_unit_listener",
]

# Callbacks run before any unit starts on an engine (keyed by ``id(engine)``). A strategy's state is
# consistent at that moment (every finished unit recorded), so a chain can checkpoint there.
_UNIT_LISTENERS: Dict[int, list] = {}


def add_unit_listener(engine: ExecutionEngine, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback()`` before every unit submitted on ``engine``; returns a function that removes it."""
    _UNIT_LISTENERS.setdefault(id(engine), []).append(callback)

    def remove() -> None:
        listeners = _UNIT_LISTENERS.get(id(engine), [])
        if callback in listeners:
            listeners.remove(callback)
        if not listeners:
            _UNIT_LISTENERS.pop(id(engine), None)

    return remove


class UnitFailed(RuntimeError):
    """A unit's job ended without a result (its trial failed or reported nothing)."""


def inner_module(model_space: ExecutableModelSpace) -> Optional[Any]:
    """The model space module inside NNI's executable wrapper (``RawFormatModelSpace`` or
    ``SimplifiedModelSpace``), or ``None``."""
    inner = getattr(model_space, "model_space", None)  # RawFormatModelSpace
    if inner is None:
        inner = getattr(model_space, "model", None)  # SimplifiedModelSpace keeps a trace copy
    return inner


def space_module(model_space: ExecutableModelSpace) -> Any:
    """The model space as a module instance: the wrapped one (``RawFormatModelSpace``), else rebuilt
    from its trace (``SimplifiedModelSpace`` keeps only a serialisable trace copy)."""
    import torch.nn as nn

    inner = inner_module(model_space)
    return inner if isinstance(inner, nn.Module) else build_space(space_reference(model_space))


def space_reference(model_space: ExecutableModelSpace) -> Dict[str, Any]:
    """``{'symbol': class, 'kwargs': dict}`` to rebuild the (un-frozen) model space inside a unit."""
    inner = inner_module(model_space)
    if inner is None or not hasattr(inner, "trace_symbol"):
        raise TypeError(f"cannot find a traceable model space inside {type(model_space).__name__}")
    if inner.trace_args:
        raise TypeError("model spaces used by BiX-NAS strategies must be built with keyword arguments only")
    return {"symbol": inner.trace_symbol, "kwargs": dict(inner.trace_kwargs)}


def build_space(reference: Dict[str, Any], **overrides):
    """Instantiate a model space from :func:`space_reference` output, with ``overrides`` applied."""
    return reference["symbol"](**{**reference["kwargs"], **overrides})


def narrow_space(model_space: ExecutableModelSpace, candidates: Mapping[str, Sequence[int]]) -> ExecutableModelSpace:
    """The same executable space (same wrapper type and evaluator) rebuilt with ``candidates`` narrowing
    its skip choices: what Phase 2 searches and freezes after Phase 1.

    A narrowed choice may hold more inputs than the full space's ``max_k`` (Phase 1 'code' exports the
    sequential input and up to ``N - 2`` picks); its ``max_k`` is then ``|candidates|``.
    """
    reference = space_reference(model_space)
    narrowed = build_space(reference, candidates={k: sorted(int(i) for i in v) for k, v in candidates.items()})
    return type(model_space).from_model(narrowed, model_space.evaluator)


class UnitRunner:
    """Submit units to an engine one at a time and collect their raw final metric dicts.

    Parameters
    ----------
    model_space
        The strategy's :class:`~nni.nas.space.ExecutableModelSpace`; a unit is a frozen copy of it with
        the unit's evaluator.
    engine
        The execution engine.
    """

    def __init__(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> None:
        self.model_space = model_space
        self.engine = engine
        self._results: Dict[int, Any] = {}
        self._ended: Dict[int, ModelStatus] = {}
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_end)

    def close(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_end)

    def _on_final(self, event: FinalMetricEvent) -> None:
        self._results[id(event.model)] = event.metric

    def _on_end(self, event: TrainingEndEvent) -> None:
        self._ended[id(event.model)] = event.status

    def make_job(self, function: Callable[..., Any], sample: Sample, **kwargs) -> ExecutableModelSpace:
        """The job ``function(frozen_model, **kwargs)``, frozen at ``sample``."""
        template = copy.copy(self.model_space)
        template.evaluator = FunctionalEvaluator(function, **kwargs)
        template.status = ModelStatus.Initialized
        return template.freeze(sample)

    def run(self, function: Callable[..., Any], sample: Sample, *, grace_s: float = 30.0, **kwargs) -> Dict[str, Any]:
        """Run one unit to completion and return its final metric dict.

        Raises
        ------
        UnitFailed
            If the job failed, or reported no final metric within ``grace_s`` seconds after it ended.
        """
        for listener in list(_UNIT_LISTENERS.get(id(self.engine), [])):
            listener()
        job = self.make_job(function, sample, **kwargs)
        self.engine.submit_models(job)
        self.engine.wait_models(job)
        deadline = time.monotonic() + grace_s
        while id(job) not in self._results and time.monotonic() < deadline:
            if job.status == ModelStatus.Failed:
                break
            time.sleep(0.2)  # a FinalMetric may arrive after TrainingEnd
        if id(job) not in self._results:
            raise UnitFailed(f"unit {getattr(function, '__name__', function)} ended with status {job.status.value} and no result")
        result = self._results.pop(id(job))
        if not isinstance(result, dict):
            result = {"default": result}
        return result


#: Arguments of the one training loop (:func:`nni_bixnas.training.fit`) a unit may take from the
#: experiment's evaluator (:func:`nni_bixnas.training.train_and_report`).
TRAINING_KEYS = ("data", "batch_size", "seed", "split_seed", "lr", "patch_size", "resize", "val_fraction", "precision",
                 "accelerator", "devices")


def training_settings(model_space: ExecutableModelSpace, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Training settings for units: the evaluator's (if it is a ``FunctionalEvaluator``), then ``overrides``.

    So a strategy trains on the data the experiment's evaluator names, unless told otherwise.
    """
    settings: Dict[str, Any] = {}
    evaluator = getattr(model_space, "evaluator", None)
    if isinstance(evaluator, FunctionalEvaluator):
        settings.update({k: v for k, v in evaluator.arguments.items() if k in TRAINING_KEYS})
    settings.update(overrides or {})
    unknown = sorted(set(settings) - set(TRAINING_KEYS))
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(unknown)}; expected some of {', '.join(TRAINING_KEYS)}")
    return settings


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
