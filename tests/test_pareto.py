"""Pareto front and Phase 2 parent selection on hand-made points."""

import numpy as np
import pytest

from nni_bixnas.strategy.pareto import pareto_front, select_parents


@pytest.mark.parametrize(
    "costs, front",
    [
        ([], []),
        ([[0.5, 3.0]], [0]),
        # a clean trade-off: nothing dominated
        ([[0.1, 9.0], [0.2, 5.0], [0.3, 1.0]], [0, 1, 2]),
        # 1 is dominated by 0 (worse in both), 3 by 2 (equal cost, worse error)
        ([[0.1, 5.0], [0.2, 6.0], [0.3, 1.0], [0.4, 1.0]], [0, 2]),
        # exact duplicates: only the first copy stays
        ([[0.2, 4.0], [0.1, 8.0], [0.2, 4.0], [0.1, 8.0]], [0, 1]),
        # a duplicate of a dominated point is dropped too
        ([[0.3, 9.0], [0.1, 1.0], [0.3, 9.0]], [1]),
        # ties in one column: the lower other column dominates
        ([[0.2, 7.0], [0.2, 3.0], [0.5, 3.0]], [1]),
        # three objectives
        ([[1, 2, 3], [2, 1, 3], [2, 2, 3], [1, 2, 2]], [1, 3]),
    ],
)
def test_pareto_front(costs, front):
    assert pareto_front(costs) == front


def test_pareto_front_accepts_arrays_and_rejects_bad_input():
    assert pareto_front(np.array([[1.0, 1.0], [0.0, 2.0]])) == [0, 1]
    with pytest.raises(ValueError, match="2-D"):
        pareto_front([1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([[0.1, 1.0], [float("nan"), 2.0]])


def test_pareto_front_is_exhaustively_correct_on_random_points():
    rng = np.random.default_rng(0)
    costs = rng.integers(0, 4, size=(40, 2)).astype(float)  # many ties and duplicates
    front = pareto_front(costs)
    for i, row in enumerate(costs):
        dominated = any((costs[j] <= row).all() and (costs[j] < row).any() for j in range(len(costs)))
        first_copy = not any((costs[j] == row).all() for j in range(i))
        assert (i in front) == (not dominated and first_copy)


def test_select_parents_ranks_front_by_iou_and_keeps_k():
    ious = [0.70, 0.80, 0.75, 0.60, 0.80, 0.79]
    macs = [10.0, 30.0, 12.0, 5.0, 30.0, 40.0]
    # front: 0 (0.70, 10), 1 (0.80, 30), 2 (0.75, 12), 3 (0.60, 5); 4 duplicates 1; 5 is dominated by 1
    assert select_parents(ious, macs, keep=4) == [1, 2, 0, 3]
    assert select_parents(ious, macs, keep=2) == [1, 2]
    # more parents than the front holds: the rest by IoU (4 ties 1 in IoU and MACs, then 5)
    assert select_parents(ious, macs, keep=10) == [1, 2, 0, 3, 4, 5]
    assert select_parents([0.5], [1.0], keep=3) == [0]
    assert select_parents([], [], keep=3) == []


@pytest.mark.parametrize(
    "ious, macs, keep, kept",
    [
        # every IoU ties (a short stage): the front is the cheapest alone; the fill goes by MACs then index
        ([0.0, 0.0, 0.0, 0.0], [30.0, 10.0, 20.0, 10.0], 3, [1, 3, 2]),
        ([0.0, 0.0, 0.0], [5.0, 5.0, 5.0], 2, [0, 1]),
        # a front of one: the fill prefers IoU over MACs
        ([0.9, 0.5, 0.8, 0.8], [1.0, 2.0, 9.0, 3.0], 3, [0, 3, 2]),
    ],
)
def test_select_parents_fills_a_small_front_by_iou(ious, macs, keep, kept):
    assert select_parents(ious, macs, keep) == kept


def test_select_parents_errors():
    with pytest.raises(ValueError, match="one of each"):
        select_parents([0.1, 0.2], [1.0], keep=1)
    with pytest.raises(ValueError, match="keep"):
        select_parents([0.1], [1.0], keep=0)
