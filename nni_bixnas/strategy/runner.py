"""Expensive units of work (a SuperNet training, a Phase 2 stage, a retraining) as NNI engine jobs.

A unit is submitted like any NNI trial: an :class:`~nni.nas.space.ExecutableModelSpace` whose evaluator
is a :class:`~nni.nas.evaluator.FunctionalEvaluator` running ``function(model, **kwargs)`` (the job
bodies are in :mod:`nni_bixnas.strategy.units`). The same strategy therefore runs in-process
(``SequentialExecutionEngine``, ``NasExperiment`` from Python) and as trials of a training service
(``nnictl`` through :mod:`nni_bixnas.experiment`). The function reports its result with
``nni.report_final_result(dict)``; :class:`UnitRunner` reads the raw dict from the ``FinalMetric`` event
(``model.metric`` is canonicalised to a float) and tolerates a metric that arrives after ``TrainingEnd``.
:meth:`UnitRunner.run_many` submits independent units together (NNI's ``trialConcurrency`` of them at once).

Keyword arguments must stay small and plain (numbers, strings, lists, dicts; classes and functions by
reference): they travel as trial parameters (``shared/notes/nni-3.0.md``, bug (a)).

A unit of a :class:`~nni.nas.space.SimplifiedModelSpace` (what NNI's training services send) is a
:class:`LabelledModelSpace`: its trial parameters also carry :func:`unit_summary` (``unit``, ``stage``,
``seed``), which NNI's web UI shows in place of the whole serialised model.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import numbers
import time
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

from nni.mutable import Sample
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, ModelEventType
from nni.nas.space import ExecutableModelSpace, ModelStatus, SimplifiedModelSpace

from nni_bixnas._checks import non_negative_int

_logger = logging.getLogger(__name__)

__all__ = ["UnitRunner", "UnitFailed", "NoBudget", "add_unit_listener", "LabelledModelSpace", "unit_summary",
           "SUMMARY_KEY"]

#: Key of a unit's summary in its trial parameters. NNI's web UI (its Retiarii convention) shows this dict, when
#: present, instead of the whole parameters: as trial-table columns, Hyper-parameter axes, the trial's
#: Parameters tab (the full tree behind "Original parameters") and the Top trials tooltip.
SUMMARY_KEY = "mutation_summary"
#: Integer keyword arguments of a unit that its summary repeats.
SUMMARY_NUMBERS = ("stage", "seed")

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


def unit_summary(function: Callable[..., Any], kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """The short labels of a unit: ``unit`` and the integer ``stage`` / ``seed`` among its keyword arguments
    (or in its ``training`` settings).

    ``unit`` is the function's ``trial_label`` formatted with ``kwargs`` (e.g. ``'stage {stage}'`` ->
    ``'stage 4'``), else its name. Arguments a unit lacks are left out rather than set to ``None``, so
    the web UI sees ``stage`` as a number column.
    """
    template = getattr(function, "trial_label", None) or getattr(function, "__name__", "unit")
    summary: Dict[str, Any] = {"unit": str(template).format_map(dict(kwargs))}
    training = kwargs.get("training") if isinstance(kwargs.get("training"), Mapping) else {}
    for key in SUMMARY_NUMBERS:
        value = kwargs.get(key, training.get(key))  # a unit's seed is its training settings'
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            summary[key] = int(value)
    return summary


class LabelledModelSpace(SimplifiedModelSpace):
    """A frozen unit whose serialised form (its trial parameters) also holds ``summary`` under
    :data:`SUMMARY_KEY`.

    The trial command (``python -m nni.nas.execution.training_service trial``) loads the parameters with
    :meth:`_load`, which sets the summary aside: the trial rebuilds and runs the model as before.
    """

    summary: Dict[str, Any] = {}

    @classmethod
    def of(cls, job: SimplifiedModelSpace, summary: Mapping[str, Any]) -> "LabelledModelSpace":
        """``job`` (frozen, not yet run) with ``summary``."""
        labelled = cls(job.model, job.mutables, job.evaluator)
        labelled.status, labelled.sample = job.status, job.sample
        labelled.summary = dict(summary)
        return labelled

    def _dump(self) -> dict:
        return {SUMMARY_KEY: dict(self.summary), **super()._dump()}

    @classmethod
    def _load(cls, **attrs) -> "LabelledModelSpace":
        summary = attrs.pop(SUMMARY_KEY, {})
        model = super()._load(**attrs)
        model.summary = dict(summary)
        return model


class UnitFailed(RuntimeError):
    """A unit's job ended without a result (its trial failed or reported nothing).

    Raised by :meth:`UnitRunner.run_many`, ``results`` holds every unit's result (``None`` where none).
    """

    results: List[Optional[Dict[str, Any]]] = []


class NoBudget(UnitFailed):
    """The engine's budget (trial count or duration) is spent: the unit was not submitted."""


class UnitRunner:
    """Submit units to an engine and collect their raw final metric dicts.

    The one way a strategy runs a unit: ``with UnitRunner(space, engine) as runner: runner.run(...)``
    (the context removes the runner's engine callbacks); :meth:`run_many` runs independent units together,
    as many at once as the engine has workers.

    Parameters
    ----------
    model_space
        The strategy's :class:`~nni.nas.space.ExecutableModelSpace`; a unit is a frozen copy of it with
        the unit's evaluator.
    engine
        The execution engine.
    retries
        How many times a unit whose job failed (e.g. its trial was killed) is submitted again before
        :class:`UnitFailed` is raised. Units resume from their run folder, so a retry continues.
    """

    def __init__(self, model_space: ExecutableModelSpace, engine: ExecutionEngine, retries: int = 1) -> None:
        self.model_space = model_space
        self.engine = engine
        self.retries = non_negative_int("retries", retries)
        self._results: Dict[int, Any] = {}
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final)

    def close(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final)

    def __enter__(self) -> "UnitRunner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _on_final(self, event: FinalMetricEvent) -> None:
        self._results[id(event.model)] = event.metric

    def make_job(self, function: Callable[..., Any], sample: Sample, **kwargs) -> ExecutableModelSpace:
        """The job ``function(frozen_model, **kwargs)``, frozen at ``sample``; labelled with
        :func:`unit_summary` when the space is a plain :class:`~nni.nas.space.SimplifiedModelSpace`."""
        template = copy.copy(self.model_space)
        template.evaluator = FunctionalEvaluator(function, **kwargs)
        template.status = ModelStatus.Initialized
        job = template.freeze(sample)
        if type(job) is SimplifiedModelSpace:  # raw spaces run in-process only; subclasses keep their type
            job = LabelledModelSpace.of(job, unit_summary(function, kwargs))
        return job

    def run(self, function: Callable[..., Any], sample: Sample, *, grace_s: float = 30.0, **kwargs) -> Dict[str, Any]:
        """Wait for a worker, run one unit to completion and return its final metric dict.

        Raises
        ------
        NoBudget
            If the engine has no budget left for the unit (nothing was submitted).
        UnitFailed
            If the job failed, or reported no final metric within ``grace_s`` seconds after it ended,
            ``retries + 1`` times.
        """
        return self.run_many([(function, sample, kwargs)], grace_s=grace_s)[0]

    def run_many(self, jobs: Sequence[Tuple[Callable[..., Any], Sample, Mapping[str, Any]]], *,
                 grace_s: float = 30.0, on_result: Optional[Callable[[int, Dict[str, Any]], None]] = None,
                 poll_s: float = 0.5) -> List[Dict[str, Any]]:
        """Run independent units together and return their final metric dicts, in the order of ``jobs``.

        Each unit is submitted as soon as the engine has an idle worker (NNI's ``trialConcurrency``), so
        up to that many run at once; each is retried, checked for budget and announced to the unit
        listeners as :meth:`run` does for one. A unit whose job failed is submitted again before the units
        not yet submitted.

        Parameters
        ----------
        jobs
            ``(function, sample, kwargs)`` of every unit.
        grace_s
            How long a final metric may come after its job ended.
        on_result
            ``on_result(index, result)`` as soon as unit ``jobs[index]`` finished, before any further unit is
            submitted: the caller records it (a restart then skips it).
        poll_s
            Seconds between two looks at the running jobs.

        Raises
        ------
        NoBudget, UnitFailed
            The first error in the order of ``jobs``, once every submitted unit has ended (the results of
            the others went to ``on_result``); the error's ``results`` lists every result, ``None`` where a
            unit has none.
        """
        tasks = [_Task(index, function, sample, dict(kwargs)) for index, (function, sample, kwargs) in enumerate(jobs)]
        waiting: Deque[_Task] = collections.deque(tasks)
        running: List[_Task] = []
        results: List[Optional[Dict[str, Any]]] = [None] * len(tasks)
        errors: Dict[int, UnitFailed] = {}
        while waiting or running:
            ended = False
            for task in list(running):
                outcome = self._outcome(task, grace_s)
                if outcome is None:
                    continue
                ended = True
                running.remove(task)
                if isinstance(outcome, dict):
                    results[task.index] = outcome
                    if on_result is not None:
                        on_result(task.index, outcome)
                elif len(task.attempts) <= self.retries:
                    _logger.warning("%s; submitting it again (retry %d of %d)", outcome, len(task.attempts),
                                    self.retries)
                    task.ended_at = None
                    waiting.appendleft(task)
                else:
                    errors[task.index] = outcome
            submitted = bool(waiting) and self._submit_next(waiting, running, errors)
            if not (submitted or ended) and (running or waiting):
                time.sleep(poll_s)
        if errors:
            error = errors[min(errors)]
            error.results = results
            raise error
        return results  # type: ignore[return-value]

    def _submit_next(self, waiting: Deque[_Task], running: List[_Task], errors: Dict[int, UnitFailed]) -> bool:
        """Submit the next waiting unit if the engine has an idle worker (``True`` if it did); once the budget
        is spent, every waiting unit fails with :class:`NoBudget`.

        One at a time, so that an in-process engine (which runs a job inside ``submit_models``) has its
        result recorded before the next unit starts.
        """
        idle = self.engine.idle_worker_available()
        if self.engine.budget_available():
            if not idle:
                return False
            task = waiting.popleft()
            for listener in list(_UNIT_LISTENERS.get(id(self.engine), [])):
                listener()
            job = self.make_job(task.function, task.sample, **task.kwargs)
            task.attempts.append(job)
            running.append(task)
            self.engine.submit_models(job)
            return True
        for task in waiting:
            errors[task.index] = NoBudget(f"no budget left for unit {task.name}; the engine's trial count or "
                                          "duration is spent")
        waiting.clear()
        return False

    def _outcome(self, task: _Task, grace_s: float) -> Any:
        """The result dict of a unit, a :class:`UnitFailed` when its last attempt ended without one, or
        ``None`` while it may still come.

        A final metric may arrive after TrainingEnd (up to ``grace_s``). It may also come under an earlier
        attempt: NNI 3.0's local training service hands the parameters a killed trial never fetched to the
        next trial it starts, so the retry (the same unit) reports under the killed attempt's parameter id.
        """
        for job in task.attempts:
            if id(job) in self._results:
                result = self._results.pop(id(job))
                return result if isinstance(result, dict) else {"default": result}
        job = task.attempts[-1]
        if not job.status.completed():
            return None
        now = time.monotonic()
        if task.ended_at is None:
            task.ended_at = now
        if job.status == ModelStatus.Failed or now - task.ended_at >= grace_s:
            return UnitFailed(f"unit {task.name} ended with status {job.status.value} and no result")
        return None


@dataclasses.dataclass
class _Task:
    """One unit of :meth:`UnitRunner.run_many` and its submitted attempts."""

    index: int
    function: Callable[..., Any]
    sample: Sample
    kwargs: Dict[str, Any]
    attempts: List[ExecutableModelSpace] = dataclasses.field(default_factory=list)
    ended_at: Optional[float] = None  # when the last attempt ended without a result (monotonic clock)

    @property
    def name(self) -> str:
        return str(getattr(self.function, "__name__", self.function))
