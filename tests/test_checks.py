"""The shared option validators (nni_bixnas._checks): exact values and exact messages."""

import pytest

from nni_bixnas import _checks as checks

VALID = [
    (checks.an_int, ("seed", -3), -3),
    (checks.fraction, ("val_fraction", 0), 0.0),
    (checks.positive_int, ("n", 3), 3),
    (checks.non_negative_int, ("n", 0), 0),
    (checks.optional_int, ("seed", None), None),
    (checks.optional_int, ("seed", -4), -4),
    (checks.positive_number, ("tau", 0.5), 0.5),
    (checks.non_negative_number, ("tol", 0), 0.0),
    (checks.one_of, ("mode", "fair", ("fair", "naive")), "fair"),
    (checks.optional_path, ("out_dir", None), None),
    (checks.positive_ints, ("size", (2, 3), 2), [2, 3]),
]

INVALID = [
    (checks.an_int, ("seed", "0"), "seed must be an int, got '0'"),
    (checks.an_int, ("seed", False), "seed must be an int, got False"),
    (checks.fraction, ("val_fraction", 1), r"val_fraction must be a number in \[0, 1\), got 1"),
    (checks.positive_int, ("epochs", 0), "epochs must be a positive int, got 0"),
    (checks.positive_int, ("epochs", True), "epochs must be a positive int, got True"),
    (checks.positive_int, ("epochs", 2.0), "epochs must be a positive int, got 2.0"),
    (checks.non_negative_int, ("max_redraws", -1), "max_redraws must be a non-negative int, got -1"),
    (checks.optional_int, ("seed", "1"), "seed must be an int or None, got '1'"),
    (checks.positive_number, ("tau", float("inf"), " (temperature)"),
     r"tau \(temperature\) must be a finite number > 0, got inf"),
    (checks.positive_number, ("tau", 0), "tau must be a finite number > 0, got 0"),
    (checks.non_negative_number, ("tol", float("nan")), "tol must be a number >= 0, got nan"),
    (checks.one_of, ("step", "batched", ("plain", "naive")),
     "unknown step 'batched'; expected one of 'plain', 'naive'"),
    (checks.optional_path, ("out_dir", 3), "out_dir must be a path or None, got 3"),
    (checks.positive_ints, ("size", (2, 0), 2), r"size must be positive ints, got \(2, 0\)"),
    (checks.positive_ints, ("size", [2], 2, "(h, w)"), r"size must be \(h, w\), got \[2\]"),
    (checks.known_keys, ("setting(s)", {"lr": 1, "lrr": 2, "a": 3}, ("lr",)),
     "unknown setting[(]s[)] a, lrr; expected some of lr"),
    (checks.a_bool, ("progress", "yes"), "progress must be true or false, got 'yes'"),
    (checks.divisible_input, ((2, 3, 64, 48), 32, "2 ** levels"),
     r"input size \(64, 48\) is not divisible by 32 \(2 \*\* levels\); crop or pad to a multiple of 32"),
]


@pytest.mark.parametrize("check, args, expected", VALID)
def test_valid_values_come_back_canonical(check, args, expected):
    value = check(*args)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("check, args, message", INVALID)
def test_invalid_values_raise_one_clear_error(check, args, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check(*args)
