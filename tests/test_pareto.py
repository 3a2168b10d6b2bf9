"""Pareto front and Phase 2 parent selection: hand-made points, and agreement with the authors' code.

The reference for ``pareto_front`` is an independent port of the authors' ``get_pareto_front``
(``_authors_get_pareto_front`` below), not a re-statement of our own algorithm.
"""

import re

import numpy as np
import pytest

from nni_bixnas.strategy.pareto import pareto_front, select_parents, within_noise


# --------------------------------------------------------------------------------------------------
# Port of the authors' code.
#
# Source: github.com/tiangexiang/BiX-NAS, CORE/pytorch_version/Phase2tools.py, ``get_pareto_front``
# (lines 36-59). The file was added in commit 133ffb16d27f43c4f894aa85a59eaf00131f08f8 and is unchanged
# at HEAD 36490ad ("Shared convolutions updated."). Its caller is ``train_single_iteration`` in
# CORE/pytorch_version/Phase2utils.py:
#     tot_score = np.array(tot_score)                 # rows [1 - best_iou, MACs]
#     ans = get_pareto_front(tot_score, False)
# and ``search`` in the same file ranks the winners:
#     sorted_idx = sorted(range(len(scores)), key=lambda k: scores[k][0])[:candidate[iteration]]
#
# Changes from the original: the function is renamed and private, and the docstring is shortened.
# The body is copied line for line; it already uses only current numpy API (np.arange, np.any, np.sum,
# np.zeros with dtype=bool), so nothing in it had to change. ``_authors_select`` below copies the two
# caller lines above into one function, with ``candidate[iteration]`` turned into an argument.
# --------------------------------------------------------------------------------------------------
def _authors_get_pareto_front(costs, return_mask=True):
    """The authors' ``get_pareto_front``: non-dominated rows of an ``(n_points, n_costs)`` array."""
    is_efficient = np.arange(costs.shape[0])
    n_points = costs.shape[0]
    next_point_index = 0  # Next index in the is_efficient array to search for
    while next_point_index < len(costs):
        nondominated_point_mask = np.any(costs < costs[next_point_index], axis=1)
        nondominated_point_mask[next_point_index] = True
        is_efficient = is_efficient[nondominated_point_mask]  # Remove dominated points
        costs = costs[nondominated_point_mask]
        next_point_index = np.sum(nondominated_point_mask[:next_point_index]) + 1
    if return_mask:
        is_efficient_mask = np.zeros(n_points, dtype=bool)
        is_efficient_mask[is_efficient] = True
        return is_efficient_mask
    else:
        return is_efficient


def _authors_front(costs):
    """The authors' call: ``get_pareto_front(np.array(rows), False)``, as a list of ints."""
    return [int(i) for i in _authors_get_pareto_front(np.array(costs), False)]


def _authors_select(ious, macs, keep):
    """The authors' Phase 2 selection (``train_single_iteration`` + the ranking in ``search``)."""
    tot_score = np.array([[1.0 - iou, m] for iou, m in zip(ious, macs)])
    ans = _authors_get_pareto_front(tot_score, False)
    scores = [list(tot_score[winner]) for winner in ans]
    sorted_idx = sorted(range(len(scores)), key=lambda k: scores[k][0])[:keep]
    return [int(ans[k]) for k in sorted_idx]


# What "same" means. The authors' function returns indices (with return_mask=False, as Phase2 calls
# it), ascending, so it is compared with ours as an exact list. Both drop exact duplicates in the same
# way: when the authors' loop visits a point it removes every other remaining row that is >= it in
# every column, exact copies included, and the lowest-index copy of a non-dominated point is the one
# visited first. So "same" is list equality of the indices, duplicates and order included; no set or
# de-duplication step is applied on either side.


# --------------------------------------------------------------------------------------------------
# Hand-made fronts: exact values, checked against ours and against the port (which checks the port).
# --------------------------------------------------------------------------------------------------
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
        # every point identical: the first alone
        ([[1.0, 2.0]] * 4, [0]),
        # the dominating point comes last, after a duplicate pair it dominates
        ([[2.0, 2.0], [2.0, 2.0], [1.0, 3.0], [1.0, 1.0]], [3]),
        # three objectives
        ([[1, 2, 3], [2, 1, 3], [2, 2, 3], [1, 2, 2]], [1, 3]),
    ],
)
def test_pareto_front(costs, front):
    assert pareto_front(costs) == front
    assert _authors_front(costs) == front


def test_pareto_front_accepts_arrays_and_rejects_bad_input():
    assert pareto_front(np.array([[1.0, 1.0], [0.0, 2.0]])) == [0, 1]
    with pytest.raises(ValueError, match="2-D"):
        pareto_front([1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([[0.1, 1.0], [float("nan"), 2.0]])


# --------------------------------------------------------------------------------------------------
# Random tie-heavy cases: ours against the authors' function.
# --------------------------------------------------------------------------------------------------
TRIALS = 25


def _tie_heavy_costs(rng, n, m, levels):
    """``n`` rows of ``m`` small integer-valued floats in ``0..levels-1``: many ties and exact copies."""
    return rng.integers(0, levels, size=(n, m)).astype(float).tolist()


def _has_exact_duplicate(rows):
    return len({tuple(r) for r in rows}) < len(rows)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("m, levels", [(2, 2), (2, 3), (2, 4), (3, 2), (3, 3)])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 13, 30])
def test_pareto_front_matches_authors_on_tie_heavy_points(seed, m, levels, n):
    rng = np.random.default_rng([seed, m, levels, n])
    duplicates = 0
    for _ in range(TRIALS):
        costs = _tie_heavy_costs(rng, n, m, levels)
        duplicates += _has_exact_duplicate(costs)
        ours, theirs = pareto_front(costs), _authors_front(costs)
        assert ours == theirs, f"costs={costs}: ours {ours}, authors' {theirs}"
    if n >= 5:
        # the cases must really hold exact duplicates, or the comparison would not test them
        assert duplicates > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [0, 1, 2, 4, 7, 15, 45])
def test_pareto_front_matches_authors_on_iou_macs_scale(seed, n):
    """Realistic scales: IoU on a 1/8 grid (exact in binary) and MACs as large integers, as Phase 2 feeds them."""
    rng = np.random.default_rng([seed, n, 8])
    for _ in range(TRIALS):
        ious = rng.integers(0, 8, size=n) / 8.0
        macs = 17e9 + 1e9 * rng.integers(0, 4, size=n)
        costs = [[1.0 - i, float(c)] for i, c in zip(ious, macs)]
        assert pareto_front(costs) == _authors_front(costs), f"costs={costs}"


# --------------------------------------------------------------------------------------------------
# select_parents: exact tables, and agreement with the authors' selection where theirs is defined.
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ious, macs, keep, kept",
    [
        # front: 0 (0.70, 10), 1 (0.80, 30), 2 (0.75, 12), 3 (0.60, 5); 4 duplicates 1; 5 is dominated by 1
        ([0.70, 0.80, 0.75, 0.60, 0.80, 0.79], [10.0, 30.0, 12.0, 5.0, 30.0, 40.0], 4, [1, 2, 0, 3]),
        ([0.70, 0.80, 0.75, 0.60, 0.80, 0.79], [10.0, 30.0, 12.0, 5.0, 30.0, 40.0], 2, [1, 2]),
        ([0.70, 0.80, 0.75, 0.60, 0.80, 0.79], [10.0, 30.0, 12.0, 5.0, 30.0, 40.0], 1, [1]),
        # more parents than the front holds: the rest by IoU (4 ties 1 in IoU and MACs, then 5)
        ([0.70, 0.80, 0.75, 0.60, 0.80, 0.79], [10.0, 30.0, 12.0, 5.0, 30.0, 40.0], 10, [1, 2, 0, 3, 4, 5]),
        ([0.5], [1.0], 3, [0]),
        ([], [], 3, []),
        # the official schedule keeps 3 after the last stage: front 4, 1, 0, 2 (3 is dominated by 1), first 3 by IoU
        ([0.5, 0.6, 0.4, 0.6, 0.7], [3.0, 4.0, 1.0, 5.0, 9.0], 3, [4, 1, 0]),
        # every IoU ties (a short stage): the front is the cheapest alone; the fill goes by MACs then index
        ([0.0, 0.0, 0.0, 0.0], [30.0, 10.0, 20.0, 10.0], 3, [1, 3, 2]),
        ([0.0, 0.0, 0.0], [5.0, 5.0, 5.0], 2, [0, 1]),
        # a front of one: the fill prefers IoU over MACs
        ([0.9, 0.5, 0.8, 0.8], [1.0, 2.0, 9.0, 3.0], 3, [0, 3, 2]),
        # an exact duplicate of a front member is off the front: it comes after the whole front (2), despite its IoU
        ([0.9, 0.9, 0.2], [5.0, 5.0, 1.0], 3, [0, 2, 1]),
    ],
)
def test_select_parents_table(ious, macs, keep, kept):
    assert select_parents(ious, macs, keep) == kept


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("keep", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 15, 45])
def test_select_parents_matches_authors_on_the_front(seed, keep, n):
    """Up to the size of the front, ours keeps exactly the authors' parents, in the authors' order.

    Beyond it the authors keep nobody (a front smaller than ``keep`` shrinks the population); ours fills
    the remaining places from the other members, so only the length is checked there.
    """
    rng = np.random.default_rng([seed, keep, n])
    for _ in range(TRIALS):
        ious = (rng.integers(0, 4, size=n) / 4.0).tolist()
        macs = rng.integers(1, 4, size=n).astype(float).tolist()
        ours, theirs = select_parents(ious, macs, keep), _authors_select(ious, macs, keep)
        assert ours[: len(theirs)] == theirs, f"ious={ious} macs={macs}: ours {ours}, authors' {theirs}"
        assert len(ours) == min(keep, n)


def test_select_parents_errors():
    with pytest.raises(ValueError, match="one of each"):
        select_parents([0.1, 0.2], [1.0], keep=1)
    with pytest.raises(ValueError, match="keep"):
        select_parents([0.1], [1.0], keep=0)


# per-image IoUs of 4 members on 3 images (means 0.6, 0.55, 0.4, 0.6)
IMAGES = [[0.7, 0.5, 0.6], [0.5, 0.6, 0.55], [0.4, 0.4, 0.4], [0.6, 0.6, 0.6]]
MEANS = [0.6, 0.55, 0.4, 0.6]


@pytest.mark.parametrize(
    "n_se, within",
    [
        (0.0, [0, 3]),         # only the ties with the best (member 0, the first of the two at 0.6)
        (1.0, [0, 1, 3]),      # member 1: mean difference 0.05 <= paired SE sd([.2, -.1, .05]) / sqrt(3) = 0.0866
        (0.5, [0, 3]),         # 0.05 > 0.5 * 0.0866
        (20.0, [0, 1, 2, 3]),
    ],
)
def test_within_noise_is_the_paired_one_standard_error_rule(n_se, within):
    assert within_noise(MEANS, IMAGES, n_se) == within


@pytest.mark.parametrize(
    "macs, keep, kept",
    [
        ([40, 10, 1, 30], 2, [1, 3]),      # within 1 SE: 0, 1, 3 -> cheapest first: 1 (10), 3 (30)
        ([40, 10, 1, 30], 4, [1, 3, 0, 2]),  # then the authors' order of the rest
        ([10, 40, 1, 30], 1, [0]),         # the best is also the cheapest within noise
    ],
)
def test_one_se_selection_prefers_the_cheapest_within_noise(macs, keep, kept):
    assert select_parents(MEANS, macs, keep, selection="one_se", image_ious=IMAGES) == kept
    assert select_parents(MEANS, macs, keep)[:1] == [3 if macs[3] < macs[0] else 0]  # the authors' rule: best IoU


def test_one_se_without_per_image_scores_is_the_iou_rule_with_cheaper_ties_first():
    assert select_parents(MEANS, [40, 10, 1, 30], 2, selection="one_se") == [3, 0]
    assert select_parents(MEANS, [40, 10, 1, 30], 2, selection="one_se", image_ious=[[]] * 4) == [3, 0]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: select_parents([0.5], [1], 1, selection="cheap"),
         "unknown selection 'cheap'; expected one of 'iou', 'one_se'"),
        (lambda: within_noise([0.5, 0.4], [[0.5]]), "got 2 IoU values but 1 per-image IoU lists"),
        (lambda: within_noise([0.5], [[0.5]], -1), "n_se must be a number >= 0, got -1"),
    ],
)
def test_selection_errors(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
