"""What Phase 2 records: one :class:`Member` per scored architecture, one :class:`StageRecord` per stage.

Units report plain dicts (they travel as NNI metrics); the strategy keeps these types, and writes them
back as plain dicts (:meth:`StageRecord.to_dict`) into its state and results.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from nni_bixnas.utils import atomic_write

_logger = logging.getLogger(__name__)

__all__ = ["Member", "StageRecord", "population_of", "SHARED_WEIGHTS", "RETRAINED", "RETRAINED_MEAN", "FINALIST",
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


def final_scores(history: Sequence[StageRecord]) -> List[float]:
    """Validation IoU of the parents the last scored stage kept (a stage with nothing to compare keeps them)."""
    scored = [h for h in history if h.population]
    return [m.iou for m in scored[-1].parents] if scored else []


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
#: ``iou_kind`` of the finalist check's short standalone trainings (``BiXNAS(finalist_epochs=...)``).
FINALIST = "standalone, finalist check"


def retrained_headline(ious: Sequence[Optional[float]], final_ious: Sequence[Optional[float]] = ()
                       ) -> Dict[str, Any]:
    """``retrained_iou_mean``, ``retrained_iou_std`` (sample std; 0 for one seed) and ``retrained_seeds`` of
    the retrained IoUs (``None`` entries skipped); empty if there is none. With ``final_ious`` (each seed's
    last-epoch IoU, all known) also ``retrained_final_iou_mean`` and ``retrained_final_iou_std``."""
    values = [float(v) for v in ious if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return {}
    finals = [float(v) for v in final_ious if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if finals and len(finals) == len(values):
        return {**retrained_headline(values), "retrained_final_iou_mean": statistics.fmean(finals),
                "retrained_final_iou_std": statistics.stdev(finals) if len(finals) > 1 else 0.0}
    return {"retrained_iou_mean": statistics.fmean(values),
            "retrained_iou_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "retrained_seeds": len(values)}


def final_complexity(retrained: Sequence[Mapping[str, Any]], model_space: Any, sample: Mapping[str, Any]
                     ) -> Dict[str, int]:
    """``{'macs', 'params'}`` of the found net ``sample`` at 512 x 512: as its retraining measured them
    (``retrained`` records), else counted on ``model_space.freeze(sample)``; ``{}`` if that fails."""
    for record in retrained:
        if isinstance(record.get("macs"), (int, float)) and isinstance(record.get("params"), (int, float)):
            return {"macs": int(record["macs"]), "params": int(record["params"])}
    from nni_bixnas.profile import count_complexity

    try:
        model = model_space.freeze(sample).executable_model()
        complexity = count_complexity(model.cpu(), input_size=(512, 512))
    except Exception as err:  # a report detail: never fail the finished search for it
        _logger.warning("Cannot count the final net's MACs and params: %s", err)
        return {}
    return {"macs": int(complexity.macs), "params": int(complexity.params)}


def summary_line(result: Mapping[str, Any]) -> str:
    """One line naming a finished search's found net (``BiXNAS.result``): its gene (else its sample), MACs,
    params and retrained IoU mean ± std."""
    genes = result.get("genes")
    net = " ".join(genes[0].split()) if genes else json.dumps(result["final_samples"][0])
    macs = f"{result['macs'] / 1e9:.3f} GMACs" if "macs" in result else "GMACs n/a"
    params = f"{result['params']:,} params" if "params" in result else "params n/a"
    if "retrained_iou_mean" in result:
        seeds = result["retrained_seeds"]
        iou = (f"retrained IoU {result['retrained_iou_mean']:.4f} ± {result['retrained_iou_std']:.4f} "
               f"over {seeds} seed{'s' if seeds != 1 else ''}")
        if "retrained_final_iou_mean" in result:
            iou += (f" (best validation epoch; final epoch {result['retrained_final_iou_mean']:.4f} ± "
                    f"{result['retrained_final_iou_std']:.4f})")
    else:
        iou = "not retrained"
    return f"BiX-NAS found: {net} | {macs} (512 x 512), {params}, {iou}"


def split_record(split_seed: int, phase1_result: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The train/validation split every unit used (``split_seed``, and the validation items Phase 1 saw)."""
    split: Dict[str, Any] = {"split_seed": split_seed}
    run = Path(str((phase1_result or {}).get("out_dir", ""))) / "run.json"
    if run.is_file():
        split["val_sources"] = json.loads(run.read_text()).get("val_sources")
    return split


def write_result(out: Path, result: Mapping[str, Any], gene_text: Optional[str]) -> None:
    """A finished search's ``result.json``, ``sample.json`` (the winner) and ``gene.txt``, each atomically."""
    with atomic_write(out / "result.json") as f:
        json.dump(result, f, indent=2, default=str)
    with atomic_write(out / "sample.json") as f:
        json.dump(result["final_samples"][0], f, indent=2)
    if gene_text:
        with atomic_write(out / "gene.txt") as f:
            f.write(gene_text)
