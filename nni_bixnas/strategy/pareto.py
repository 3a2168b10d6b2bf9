"""Pareto fronts and the Phase 2 parent selection (the authors' ``get_pareto_front`` + ranking).

BiX-NAS keeps, after every stage of the progressive evolution, the architectures on the Pareto front of
``(1 - IoU, MACs)`` (both minimised), ranked by IoU (highest first), and retains the first ``|P|`` of them
(``shared/notes/official-code.md`` §3 "Selection"): ``selection='iou'``. With ``objective='latency'`` the
cost is the members' measured latency instead of their MACs.

``selection='one_se'`` is the one-standard-error rule: the members whose IoU is within ``n_se`` paired
standard errors (over the validation images) of the best member's come first, cheapest first; then the
authors' order. A short stage scores its members within noise of each other, and ranking that noise by IoU
keeps the densest nets; this rule keeps the cheapest net that the stage cannot tell from the best.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from nni_bixnas._checks import non_negative_number, one_of, positive_int

__all__ = ["pareto_front", "select_parents", "within_noise", "SELECTIONS"]

#: Parent selection rules of :func:`select_parents`.
SELECTIONS = ("iou", "one_se")


def pareto_front(costs: Sequence[Sequence[float]]) -> List[int]:
    """Indices of the non-dominated rows of ``costs``, every column minimised.

    Row ``i`` is dominated when another row is ``<=`` in every column and ``<`` in at least one.
    Rows that are exactly equal do not dominate each other; of such duplicates only the first (lowest
    index) is kept, as the authors drop exact duplicate points.

    Parameters
    ----------
    costs
        ``n x m`` costs (a list of rows or an array); ``n`` may be 0.

    Returns
    -------
    list of int
        Indices into ``costs``, ascending.

    Raises
    ------
    ValueError
        If ``costs`` is not two-dimensional or holds NaN.

    Examples
    --------
    >>> pareto_front([[0.3, 10], [0.2, 20], [0.3, 30], [0.2, 20]])
    [0, 1]
    """
    array = np.asarray(costs, dtype=float)
    if array.size == 0:
        return []
    if array.ndim != 2:
        raise ValueError(f"costs must be a 2-D table (one row per point), got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"costs hold NaN in row(s) {sorted(set(np.argwhere(np.isnan(array))[:, 0].tolist()))}")
    front = []
    for i, row in enumerate(array):
        no_worse = (array <= row).all(axis=1)
        better = (array < row).any(axis=1)
        if (no_worse & better).any():
            continue  # dominated
        if any((array[j] == row).all() for j in range(i)):
            continue  # an earlier exact duplicate represents it
        front.append(i)
    return front


def within_noise(ious: Sequence[float], image_ious: Sequence[Sequence[float]], n_se: float = 1.0) -> List[int]:
    """Indices of the members whose IoU is within ``n_se`` paired standard errors of the best member's.

    For member ``m`` and the best member ``b`` (highest IoU, then lowest index), ``d_i = IoU_b,i - IoU_m,i``
    over the validation images ``i``; ``m`` is within noise when ``IoU_b - IoU_m <= n_se * sd(d) / sqrt(n)``
    (the standard error of the paired mean difference; the limit of a paired per-image bootstrap). A member
    without per-image IoUs (or with another image count than the best's) has standard error 0: it counts
    only when it ties the best.

    Examples
    --------
    >>> within_noise([0.5, 0.45, 0.2], [[0.6, 0.4], [0.4, 0.5], [0.2, 0.2]])
    [0, 1]
    """
    if len(image_ious) != len(ious):
        raise ValueError(f"got {len(ious)} IoU values but {len(image_ious)} per-image IoU lists; expected one per "
                         "member")
    non_negative_number("n_se", n_se)
    if not ious:
        return []
    best = max(range(len(ious)), key=lambda i: (float(ious[i]), -i))
    reference = np.asarray(image_ious[best], dtype=float)
    kept = []
    for i, iou in enumerate(ious):
        own = np.asarray(image_ious[i], dtype=float)
        paired = own.size > 1 and own.size == reference.size
        se = float(np.std(reference - own, ddof=1) / np.sqrt(own.size)) if paired else 0.0
        if float(ious[best]) - float(iou) <= n_se * se + 1e-12:
            kept.append(i)
    return kept


def select_parents(ious: Sequence[float], costs: Sequence[float], keep: int, *, selection: str = "iou",
                   image_ious: Optional[Sequence[Sequence[float]]] = None, n_se: float = 1.0) -> List[int]:
    """The Phase 2 selection: Pareto front of ``(1 - IoU, cost)``, by IoU descending, first ``keep``.

    The cost is the search's objective: MACs (the paper's), or measured latency. Ties in IoU go to the lower
    cost (on a front, equal IoU implies equal cost, i.e. a dropped duplicate). When the front holds fewer
    than ``keep`` members (e.g. every IoU ties, and the front is the cheapest member alone), the remaining
    parents are the best of the other members by IoU (then lower cost, then index), so the population does
    not collapse onto one parent.

    Parameters
    ----------
    ious
        Validation IoU of every member.
    costs
        MACs, or latency, of every member (same order).
    keep
        How many parents to retain (``|P|``); fewer only when there are fewer members.
    selection
        ``'iou'`` (the authors'), or ``'one_se'``: the members :func:`within_noise` of the best come first,
        by cost ascending (then IoU descending, then index), then the authors' order of the others.
    image_ious, n_se
        Every member's per-image IoUs and the rule's width, for ``'one_se'`` (see :func:`within_noise`).

    Returns
    -------
    list of int
        Indices of the kept members: with ``'iou'`` the front by IoU, then the fill by IoU.
    """
    if len(ious) != len(costs):
        raise ValueError(f"got {len(ious)} IoU values but {len(costs)} cost values (MACs or latency); "
                         "expected one of each per member")
    positive_int("keep", keep)
    front = pareto_front([[1.0 - float(i), float(c)] for i, c in zip(ious, costs)])
    def rank(i: int):
        return -float(ious[i]), float(costs[i]), i

    front.sort(key=rank)
    rest = sorted(set(range(len(ious))) - set(front), key=rank)
    order = front + rest
    if one_of("selection", selection, SELECTIONS) == "one_se":
        noise = within_noise(ious, image_ious if image_ious is not None else [[] for _ in ious], n_se)
        cheapest = sorted(noise, key=lambda i: (float(costs[i]), -float(ious[i]), i))
        order = cheapest + [i for i in order if i not in noise]
    return order[:keep]
