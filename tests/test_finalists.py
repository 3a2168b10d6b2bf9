"""The finalist check's order (exact values) and its options on BiXNAS."""

from __future__ import annotations

import math

import pytest

from nni_bixnas.strategy.bixnas import BiXNAS
from nni_bixnas.strategy.finalists import order_finalists


@pytest.mark.parametrize("ious, tolerance, expected", [
    ([0.05, 0.41], 0.05, [1, 0]),               # Phase 2's pick does not train: the other wins
    ([0.38, 0.41], 0.05, [0, 1]),               # within tolerance: Phase 2's order stands
    ([0.38, 0.41], 0.0, [1, 0]),                # no tolerance: by standalone IoU
    ([0.30, 0.50, 0.47, 0.10], 0.05, [1, 2, 0, 3]),
    ([0.36, 0.41, 0.40], 0.05, [0, 1, 2]),      # 0.41 - 0.05 = 0.36 counts as within
    ([None, 0.2, math.nan], 0.05, [1, 0, 2]),   # failed trainings last, in Phase 2's order
    ([None, None], 0.05, [0, 1]),               # nothing scored: Phase 2's order
    ([], 0.05, []),
])
def test_order_finalists(ious, tolerance, expected):
    assert order_finalists(ious, tolerance) == expected


def test_a_negative_tolerance_is_an_error():
    with pytest.raises(ValueError, match="finalist_tolerance"):
        order_finalists([0.1, 0.2], -0.01)


@pytest.mark.parametrize("kwargs, message", [
    (dict(finalist_epochs=-1), "finalist_epochs"),
    (dict(finalist_epochs=1.5), "finalist_epochs"),
    (dict(finalist_tolerance=-0.1), "finalist_tolerance"),
])
def test_bixnas_checks_its_finalist_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BiXNAS(**kwargs)


def test_bixnas_names_the_finalist_check_in_its_repr():
    assert "finalist_epochs=2, finalist_tolerance=0.1" in repr(BiXNAS(finalist_epochs=2, finalist_tolerance=0.1))
    assert "finalist" not in repr(BiXNAS())
