"""The finalist check: Phase 2's final architectures trained standalone for a few epochs before one is picked.

A shared-weight score ranks nets that share every weight; it cannot see that a net trains badly on its own
(in ``benchmarks/results/search_quality_pruning.md`` one search seed's pick stays near background when
retrained, while NNI's RegularizedEvolution, which ranks nets by short standalone trainings, never picks
such a net). :class:`~nni_bixnas.strategy.BiXNAS` with ``finalist_epochs > 0`` trains each final architecture
standalone that long (one unit each, the retraining's unit) and orders them with :func:`order_finalists`:
Phase 2's order is kept among the finalists whose standalone validation IoU is within ``tolerance`` of the
best finalist's (so Phase 2's preference for the cheaper net survives the check's noise), the others follow.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from nni_bixnas._checks import non_negative_number

from . import records, units
from .runner import NoBudget, UnitRunner
from .settings import training_settings

_logger = logging.getLogger(__name__)

__all__ = ["order_finalists", "final_order", "check_finalists", "FinalistCheck"]


def order_finalists(ious: Sequence[Optional[float]], tolerance: float) -> List[int]:
    """Indices of the finalists (given in Phase 2's order) in the checked order.

    Parameters
    ----------
    ious
        Each finalist's standalone validation IoU, in Phase 2's order; ``None`` or NaN (a failed training)
        ranks last.
    tolerance
        How far (absolute IoU) below the best finalist's a finalist may score and keep its Phase 2 rank.

    Returns
    -------
    list of int
        First the finalists within ``tolerance`` of the best, in Phase 2's order; then the others by IoU
        descending (then Phase 2's order). Phase 2's order when no finalist scored.

    Examples
    --------
    >>> order_finalists([0.05, 0.41], tolerance=0.05)
    [1, 0]
    >>> order_finalists([0.38, 0.41], tolerance=0.05)
    [0, 1]
    """
    non_negative_number("finalist_tolerance", tolerance)
    scores = [float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None for v in ious]
    scored = [v for v in scores if v is not None]
    if not scored:
        return list(range(len(scores)))
    best = max(scored)
    near = [i for i, v in enumerate(scores) if v is not None and v >= best - tolerance - 1e-12]
    rest = sorted((i for i in range(len(scores)) if i not in near),
                  key=lambda i: (scores[i] is None, -(scores[i] or 0.0), i))
    return near + rest


def final_order(n: int, checked: Sequence[Mapping[str, Any]], epochs: int, tolerance: float) -> List[int]:
    """The order of ``n`` final architectures: Phase 2's (``range(n)``) unless all ``n`` were checked."""
    if not epochs or n < 2 or len(checked) < n:
        return list(range(n))
    return order_finalists([r.get("default") for r in checked], tolerance)


def check_finalists(runner, samples: Sequence[Dict[str, List[int]]], checked: List[Dict[str, Any]], *,
                    training: Dict[str, Any], epochs: int, out_dir_of: Callable[[int], Optional[str]],
                    on_record: Callable[[], None]) -> None:
    """Train every final architecture not in ``checked`` yet for ``epochs`` (one unit each, submitted together
    through ``runner``), appending each result to ``checked`` (by ``index``) and calling ``on_record`` as soon
    as it ends. Nothing to do with fewer than two."""
    if len(samples) < 2:
        return
    done = {record["index"] for record in checked}
    todo = [i for i in range(len(samples)) if i not in done]
    jobs = [(units.retrain_unit, samples[i], {"training": training, "max_epochs": epochs, "out_dir": out_dir_of(i),
                                              "iou_kind": records.FINALIST}) for i in todo]

    def record(index: int, result: Dict[str, Any]) -> None:
        checked.append({"index": todo[index], **result})
        checked.sort(key=lambda r: r["index"])
        _logger.info("Finalist %d trained standalone for %d epoch(s): IoU %s", todo[index] + 1, epochs,
                     result.get("default"))
        on_record()

    if jobs:
        _logger.info("Finalist check: %d final architecture(s), %d epoch(s) each", len(jobs), epochs)
        runner.run_many(jobs, on_result=record)


class FinalistCheck:
    """The finalist check of :class:`~nni_bixnas.strategy.BiXNAS` (which sets ``phase2``, ``finalists``,
    ``finalist_epochs``, ``finalist_tolerance``, ``training``, ``unit_retries``, ``save_state`` and
    ``_sub_dir``)."""

    @property
    def final_samples(self) -> List[Dict[str, List[int]]]:
        """Phase 2's final architectures, the winner first: in the finalist check's order once it ran, else
        Phase 2's (empty before Phase 2 ends)."""
        samples = [] if self.phase2 is None else self.phase2.final_samples
        return [samples[i] for i in self._final_order()]

    def _final_order(self) -> List[int]:
        n = 0 if self.phase2 is None else len(self.phase2.final_samples)
        return final_order(n, self.finalists, self.finalist_epochs, self.finalist_tolerance)

    def _check_finalists(self) -> bool:
        """Run the check (the finalists not checked yet); ``False`` when the budget ran out first."""
        settings = training_settings(self.model_space, self.training).to_dict()
        try:
            with UnitRunner(self.phase2.model_space, self.engine, retries=self.unit_retries) as runner:
                check_finalists(runner, self.phase2.final_samples, self.finalists, training=settings,
                                epochs=self.finalist_epochs, out_dir_of=lambda i: self._sub_dir(f"finalists/{i}"),
                                on_record=self.save_state)
        except NoBudget as err:
            _logger.warning("The finalist check stops after %d finalist(s): %s", len(self.finalists), err)
            return False
        _logger.info("Finalist check: Phase 2 rank %d wins (tolerance %.3g)", self._final_order()[0] + 1,
                     self.finalist_tolerance)
        return True
