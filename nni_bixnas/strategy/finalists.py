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

import math
from typing import List, Optional, Sequence

from nni_bixnas._checks import non_negative_number

__all__ = ["order_finalists"]


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
