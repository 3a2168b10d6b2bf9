"""What Phase 2 records: one :class:`Member` per scored architecture, one :class:`StageRecord` per stage.

Units report plain dicts (they travel as NNI metrics); the strategy keeps these types, and writes them
back as plain dicts (:meth:`StageRecord.to_dict`) into its state and results.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ["Member", "StageRecord", "population_of", "SHARED_WEIGHTS", "RETRAINED", "RETRAINED_MEAN",
           "retrained_headline"]

Sample = Dict[str, List[int]]


@dataclasses.dataclass
class Member:
    """One population member of a stage, scored on the stage's shared SuperNet.

    Attributes
    ----------
    sample
        The full architecture, ``{label: sorted indices}``.
    iou
        Best validation IoU over the stage's epochs (shared weights: comparable within a stage only).
    macs
        MACs of the fixed network at the strategy's ``macs_input_size``.
    best_epoch
        The epoch of ``iou`` (1-based).
    stage
        The stage that scored it.
    latency_ms
        Measured inference latency of the fixed network in milliseconds (at the strategy's
        ``latency_input_size``, on its ``latency_device``); ``None`` unless the search's objective is latency.
    image_iou
        The validation images' IoUs at ``best_epoch`` (their mean is ``iou``), for the paired noise estimate
        of ``selection='one_se'``; empty when the unit did not report them.
    """

    sample: Sample
    iou: float
    macs: int
    best_epoch: int
    stage: int
    latency_ms: Optional[float] = None
    image_iou: List[float] = dataclasses.field(default_factory=list)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any], stage: int) -> "Member":
        """From a unit's population entry (``sample``, ``iou``, ``macs``, ``best_epoch``, ``latency_ms``,
        ``image_iou``)."""
        sample = {str(k): [int(i) for i in v] for k, v in value["sample"].items()}
        latency = value.get("latency_ms")
        return cls(sample, float(value["iou"]), int(value["macs"]), int(value.get("best_epoch", 0)),
                   int(value.get("stage", stage)), None if latency is None else float(latency),
                   [float(v) for v in value.get("image_iou") or []])

    def cost(self, objective: str) -> float:
        """What the selection minimises beside ``1 - IoU``: ``macs``, or ``latency_ms`` (``objective='latency'``)."""
        if objective != "latency":
            return float(self.macs)
        if self.latency_ms is None:
            raise ValueError(f"stage {self.stage}: a member has no latency_ms, but the objective is latency")
        return float(self.latency_ms)


@dataclasses.dataclass
class StageRecord:
    """One finished stage of Phase 2.

    Attributes
    ----------
    stage
        The stage searched.
    skip_sets
        The drawn skip sets (each applied to every parent).
    population
        The distinct members trained, parent-major.
    front
        Indices into ``population`` of the Pareto front of ``(1 - IoU, MACs)``, or of ``(1 - IoU, latency)``
        when the members were timed (``objective='latency'``).
    kept
        Indices into ``population`` of the retained parents, in the selection's order (``selection='iou'``:
        best IoU first; ``'one_se'``: cheapest of those within noise of the best first).
    seconds
        Wall time of the stage, sampling included.
    """

    stage: int
    skip_sets: List[Sample]
    population: List[Member]
    front: List[int]
    kept: List[int]
    seconds: float

    @property
    def parents(self) -> List[Member]:
        """The kept members, in the selection's order (the first is the stage's pick)."""
        return [self.population[i] for i in self.kept]

    def to_dict(self) -> Dict[str, Any]:
        """A plain, JSON-ready dict (members as dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "StageRecord":
        stage = int(value["stage"])
        return cls(stage, [dict(s) for s in value.get("skip_sets", [])],
                   [Member.from_dict(m, stage) for m in value["population"]],
                   [int(i) for i in value["front"]], [int(i) for i in value["kept"]], float(value["seconds"]))


def population_of(result: Mapping[str, Any], stage: int, expected: int) -> List[Member]:
    """The members a stage unit's ``result`` scored; an error unless there are ``expected`` of them."""
    population = [Member.from_dict(p, stage) for p in result["population"]]
    if len(population) != expected:
        raise RuntimeError(f"stage {stage}: the unit scored {len(population)} members, expected {expected}")
    return population


#: ``iou_kind`` of a final result: Phase 1 and stage IoUs come from weights shared by many nets and are not
#: comparable with the IoU of a net retrained from scratch (NNI's engine needs every result's ``default``).
SHARED_WEIGHTS, RETRAINED = "shared weights", "retrained"
#: ``iou_kind`` of the trial that reports the retrained IoU mean over the seeds as its ``default``.
RETRAINED_MEAN = "retrained, mean over seeds"


def retrained_headline(ious: Sequence[Optional[float]]) -> Dict[str, Any]:
    """``retrained_iou_mean``, ``retrained_iou_std`` (sample std; 0 for one seed) and ``retrained_seeds`` of
    the retrained IoUs (``None`` entries skipped); empty if there is none."""
    values = [float(v) for v in ious if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return {}
    return {"retrained_iou_mean": statistics.fmean(values),
            "retrained_iou_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "retrained_seeds": len(values)}
