"""Pareto fronts and the Phase 2 parent selection (the authors' ``get_pareto_front`` + ranking).

BiX-NAS keeps, after every stage of the progressive evolution, the architectures on the Pareto front of
``(1 - IoU, MACs)`` (both minimised), ranked by IoU (highest first), and retains the first ``|P|`` of them
(``shared/notes/official-code.md`` §3 "Selection"). With ``objective='latency'`` the cost is the members'
measured latency instead of their MACs.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from nni_bixnas._checks import positive_int

__all__ = ["pareto_front", "select_parents"]


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


def select_parents(ious: Sequence[float], costs: Sequence[float], keep: int) -> List[int]:
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

    Returns
    -------
    list of int
        Indices of the kept members: the front by IoU, then the fill by IoU.
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
    return (front + rest)[:keep]
