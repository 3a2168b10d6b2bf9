"""What each unit of an experiment was, and what each Phase 2 stage found, for the export's report and plot.

A trial is labelled by the unit it ran (:func:`unit_label`): ``Phase 1``, ``stage k`` (a Phase 2 stage) or
``retrain seed s``, from its final metrics and the unit function and arguments NNI stored with its
parameters. A stage's view (:class:`StageView`) holds its distinct members, the Pareto front and the kept
parents, from the strategy's ``result.json`` (``phase2_history``, which records the kept parents) or else
from the stage trial's final metrics (which record the front only).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

__all__ = ["StageView", "mean_std", "retrained_runs", "stage_title", "stage_views", "unit_label"]


def unit_label(unit: Mapping[str, Any], final: Any) -> str:
    """``'Phase 1'``, ``'stage k'``, ``'retrain seed s'``, ``'result'`` (the retrained mean over the seeds, no
    training) or ``'trial'``.

    ``unit`` is what the trial's parameters say (``function``: the unit's name, ``stage``, ``seed``);
    ``final`` its final metrics.
    """
    final = final if isinstance(final, dict) else {}
    function = unit.get("function") or ""
    if function == "selection_matrix_unit" or final.get("phase") == 1:
        return "Phase 1"
    stage = final.get("stage", unit.get("stage"))
    if function == "phase2_stage_unit" or (stage is not None and "population" in final):
        return f"stage {stage}" if stage is not None else "Phase 2 stage"
    if function == "retrained_result_unit" or final.get("default_is") == "retrained_iou_mean":
        return "result"
    if function == "retrain_unit":
        seed = unit.get("seed")
        return f"retrain seed {seed}" if seed is not None else "retrain"
    return "trial"


@dataclasses.dataclass
class StageView:
    """One Phase 2 stage: its distinct members and which of them are on the front or kept.

    Attributes
    ----------
    stage
        The stage searched.
    members
        Distinct members (by the net they compute), as export ``Candidate`` objects.
    front, kept
        Indices into ``members`` of the Pareto front and of the kept parents (best first); ``kept`` is
        ``None`` when the source does not record it (a stage trial's metrics, without ``result.json``).
    trial
        The stage trial's id, when known.
    """

    stage: Any
    members: List[Any]
    front: List[int]
    kept: Optional[List[int]]
    trial: Optional[str] = None


def stage_views(history: Any, stage_trials: Sequence[Any], make_candidate: Callable[..., Any],
                identity: Callable[[Mapping], Any]) -> List[StageView]:
    """A view per stage, in the order the stages ran.

    Parameters
    ----------
    history
        ``result.json``'s ``phase2_history`` (a list of stage dicts), or ``None``.
    stage_trials
        ``(trial id, final dict)`` of the stage trials (final dicts with a ``population``).
    make_candidate
        ``make_candidate(member dict, stage, trial id)`` -> a candidate.
    identity
        The key two members computing the same net share (e.g. their effective sample).
    """
    trial_of = {final.get("stage"): trial_id for trial_id, final in stage_trials}
    views: Dict[Any, StageView] = {}
    for record in history if isinstance(history, list) else []:
        if isinstance(record, dict) and isinstance(record.get("population"), list):
            stage = record.get("stage")
            views[stage] = _view(stage, record, trial_of.get(stage), make_candidate, identity)
    for trial_id, final in stage_trials:
        stage = final.get("stage")
        if stage not in views:
            views[stage] = _view(stage, final, trial_id, make_candidate, identity)
    return list(views.values())


def _view(stage, record: Mapping, trial: Optional[str], make_candidate, identity) -> StageView:
    members: List[Any] = []
    position: Dict[int, int] = {}  # index in the record -> index in members
    seen: Dict[Any, int] = {}
    for i, member in enumerate(record.get("population") or []):
        if not isinstance(member, dict):
            continue
        key = identity(member.get("sample") or {})
        if key in seen:
            position[i] = seen[key]
            continue
        seen[key] = position[i] = len(members)
        members.append(make_candidate(member, stage, trial))
    kept = _indices(record["kept"], position) if "kept" in record else None
    return StageView(stage, members, _indices(record.get("front"), position), kept, trial)


def _indices(values: Any, position: Mapping[int, int]) -> List[int]:
    out: List[int] = []
    for value in values if isinstance(values, list) else []:
        if isinstance(value, int) and value in position and position[value] not in out:
            out.append(position[value])
    return out


def retrained_runs(strategy_result: Optional[Mapping], retrain_trials: Sequence[Any]) -> List[Dict[str, Any]]:
    """The retraining runs: ``result.json``'s ``retrained`` list, else the retraining trials' finals.

    Each run is a dict with ``seed``, ``default`` (IoU) and the other reported metrics (``trial`` when it
    comes from a trial).
    """
    reported = (strategy_result or {}).get("retrained")
    if isinstance(reported, list) and any(isinstance(r, dict) for r in reported):
        return [dict(r) for r in reported if isinstance(r, dict)]
    return [{"seed": seed, "trial": trial_id, **final} for trial_id, seed, final in retrain_trials]


def mean_std(values: Sequence[float]) -> Optional[Dict[str, float]]:
    """``{'mean', 'std', 'n'}`` (sample standard deviation, 0 for one value), ``None`` without values."""
    values = [float(v) for v in values]
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def stage_title(stage: Any, n_members: int) -> str:
    """``'stage 5 (iteration 2 decoders): 8 members'``."""
    where = ""
    if isinstance(stage, int):
        it, is_decoder = divmod(stage, 2)
        where = f" (iteration {it} {'decoders' if is_decoder else 'encoders'})"
    return f"stage {stage}{where}: {n_members} member{'s' if n_members != 1 else ''}"
