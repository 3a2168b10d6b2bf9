"""What a Phase 2 stage tells the log about its selection: the front, the members within noise, a population the
stage barely ranks, and the parents it keeps."""

from __future__ import annotations

import logging
from typing import Sequence

from nni_bixnas.strategy.pareto import within_noise
from nni_bixnas.strategy.records import Member

__all__ = ["log_kept", "log_selection"]

_logger = logging.getLogger("nni_bixnas.strategy.progressive_evolution")  # the search's log


def log_selection(stage: int, population: Sequence[Member], front: Sequence[int], keep: int, *, selection: str,
                  selection_se: float, iou_tolerance: float, objective: str) -> None:
    """The front's size, with ``selection='one_se'`` how many members are within noise of the best, and a
    warning when the members' IoUs span less than ``iou_tolerance`` (the selection then follows the cost)."""
    ious = [m.iou for m in population]
    filled = len(front) < min(keep, len(population))
    _logger.info("[stage %d] Pareto front: %d member(s) for keep=%d%s", stage, len(front), keep,
                 "; the other parents are the best remaining by IoU" if filled else "")
    if selection == "one_se":
        _logger.info("[stage %d] %d member(s) within %.3g standard error(s) of the best IoU; kept cheapest first",
                     stage, len(within_noise(ious, [m.image_iou for m in population], selection_se)), selection_se)
    spread = max(ious) - min(ious)
    if len(population) > 1 and spread < iou_tolerance:
        _logger.warning("[stage %d] the members' IoUs span only %.2g (< iou_tolerance %.2g): the stage barely "
                        "ranks them, so the selection follows %s; train the stage longer", stage, spread,
                        iou_tolerance, "latency" if objective == "latency" else "MACs")


def log_kept(stage: int, parents: Sequence[Member]) -> None:
    """One line per kept parent, in the selection's order."""
    for rank, member in enumerate(parents):
        latency = "" if member.latency_ms is None else f", {member.latency_ms:.2f} ms"
        _logger.info("[stage %d] kept #%d: IoU %.4f, %.3f GMACs%s", stage, rank + 1, member.iou, member.macs / 1e9,
                     latency)
