"""On resume, answer a resubmitted model from the trial that already ran it, instead of running it again.

A strategy records a unit as finished when its metric arrives, and a reloaded strategy submits every
unit it has not recorded. Two kinds of trial escape that record:

* a trial that completes while ``nnictl stop`` shuts the dispatcher down (the manager cancels trials
  only after the dispatcher is gone): it SUCCEEDED, but the strategy never heard;
* a trial still RUNNING in the database when the experiment stopped: ``nnictl resume`` launches it
  again by itself (same trial id and parameter id), unasked.

:func:`install` makes the engine recognise a submitted model that equals such a trial's model (same
frozen model and evaluator arguments): a finished trial's metrics are replayed as model events; a
relaunched trial is adopted, so its metrics reach the model as if it had been submitted now.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Dict, List, Tuple

import nni

_logger = logging.getLogger(__name__)

# Keys of a dumped model that change during its life, not part of its identity.
_VOLATILE = ("status", "metrics")


def model_key(parameters: Any) -> str:
    """A canonical text of a dumped (or dumpable) model, without its status and metrics."""
    data = json.loads(nni.dump(parameters, pickle_size_limit=-1))
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in _VOLATILE}
    return json.dumps(data, sort_keys=True)


def _replay_events(engine, model, final: Any, intermediates: List[Any], trial_id: str) -> None:
    from nni.nas.execution.event import FinalMetricEvent, IntermediateMetricEvent, TrainingEndEvent
    from nni.nas.space import ModelStatus

    for value in intermediates:
        engine.dispatch_model_event(IntermediateMetricEvent(model, value))
    engine.dispatch_model_event(FinalMetricEvent(model, final))
    engine.dispatch_model_event(TrainingEndEvent(model, ModelStatus.Trained))
    _logger.info("Reused the result of trial %s instead of running the model again", trial_id)


def recovered_trials(binding) -> Dict[str, Tuple[str, int]]:
    """``{model_key: (trial_id, parameter_id)}`` of the trials the manager relaunches on resume."""
    recovered: Dict[str, Tuple[str, int]] = {}
    for trial in binding.list_trial_jobs():
        if trial.status not in ("WAITING", "RUNNING", "UNKNOWN") or len(trial.hyperParameters) != 1:
            continue
        param = trial.hyperParameters[0]
        try:
            recovered[model_key(param.parameters)] = (trial.trialJobId, int(param.parameter_id))
        except Exception:
            continue
    return recovered


def finished_trials(binding) -> Dict[str, Tuple[str, Any, List[Any]]]:
    """``{model_key: (trial_id, final_metric, intermediate_metrics)}`` of the SUCCEEDED trials."""
    finished: Dict[str, Tuple[str, Any, List[Any]]] = {}
    for trial in binding.list_trial_jobs():
        if trial.status != "SUCCEEDED" or not trial.finalMetricData or len(trial.hyperParameters) != 1:
            continue
        try:
            key = model_key(trial.hyperParameters[0].parameters)
        except Exception:  # not a model submitted by an engine
            continue
        metrics = binding.get_job_metrics(trial.trialJobId).get(trial.trialJobId, [])
        intermediates = [m.data for m in metrics if m.type == "PERIODICAL"]
        finished[key] = (trial.trialJobId, trial.finalMetricData[-1].data, intermediates)
    return finished


def install(engine, binding, poll: float = 2.0) -> None:
    """Wrap ``engine.submit_models`` so models equal to a finished or relaunched trial's model are
    answered by that trial (see the module docstring)."""
    finished = finished_trials(binding)
    recovered = recovered_trials(binding)
    if not finished and not recovered:
        return
    import weakref

    from nni.nas.space import ModelStatus

    _logger.info("Resume: %d finished and %d relaunched trial(s) can answer resubmitted models",
                 len(finished), len(recovered))
    submit = engine.submit_models

    def adopt(model, trial_id: str, parameter_id: int) -> None:
        """Route the relaunched trial's events to ``model``; fill in what was missed before adoption."""
        engine._models[parameter_id] = weakref.ref(model)
        engine._submitted_cache[parameter_id] = model
        _logger.info("Adopted relaunched trial %s (parameter %d) for a resubmitted model", trial_id, parameter_id)
        while model.status == ModelStatus.Training:
            time.sleep(poll)
            job = binding.get_trial_job(trial_id)
            if job.status in ("WAITING", "RUNNING", "UNKNOWN"):
                continue
            time.sleep(poll)  # let the channel deliver the trial's own events first
            if model.status != ModelStatus.Training:
                return
            if job.status == "SUCCEEDED" and job.finalMetricData:
                _replay_events(engine, model, job.finalMetricData[-1].data, [], trial_id)
            else:
                from nni.nas.execution.event import TrainingEndEvent

                engine.dispatch_model_event(TrainingEndEvent(model, ModelStatus.Failed))

    def submit_models(*models) -> None:
        fresh = []
        for model in models:
            try:
                key = model_key(model)
            except Exception:
                key = None
            if key in finished:
                model.status = ModelStatus.Training
                trial_id, final, intermediates = finished.pop(key)
                # Asynchronous, as a trial's metrics are: the strategy may bookkeep after submitting.
                threading.Timer(0.2, _replay_events, args=(engine, model, final, intermediates, trial_id)).start()
            elif key in recovered:
                model.status = ModelStatus.Training
                threading.Thread(target=adopt, args=(model, *recovered.pop(key)), daemon=True).start()
            else:
                fresh.append(model)
        if fresh:
            submit(*fresh)

    engine.submit_models = submit_models
