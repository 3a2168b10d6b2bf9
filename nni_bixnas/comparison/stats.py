"""Statistics over training runs: mean ± std over seeds, and the two-tailed paired t-test of two models.

A run is a dict with a ``seed`` and one number per metric key (``bixnas compare``: ``best_iou`` and
``best_dice``; Table 1: ``test_iou``, ``test_dice``, ``tnbc_iou``, ``tnbc_dice``). Used by ``bixnas compare``
and :mod:`nni_bixnas.comparison.table1`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["BEST_METRICS", "mean_std", "paired_test", "summarize"]

#: ``bixnas compare``'s metrics: output name -> run key.
BEST_METRICS: Mapping[str, str] = {"iou": "best_iou", "dice": "best_dice"}


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """``{'mean', 'std'}``; the std is the sample one (``ddof=1``), 0 for a single value."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std}


def summarize(name: str, runs: List[Dict[str, Any]], metrics: Mapping[str, str] = BEST_METRICS) -> Dict[str, Any]:
    """``{'group', 'n', 'seeds', <metric>: mean_std}`` of ``runs``; a metric no run has is ``None``."""
    summary: Dict[str, Any] = {"group": name, "n": len(runs), "seeds": [r["seed"] for r in runs]}
    for metric, key in metrics.items():
        values = [r[key] for r in runs if r.get(key) is not None]
        summary[metric] = mean_std(values) if values else None
    return summary


def _finite(value: float) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None


def _by_seed(runs: List[Dict[str, Any]], label: str) -> Dict[Any, Dict[str, Any]]:
    seeds = [r["seed"] for r in runs]
    duplicated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
    if duplicated:
        raise ValueError(f"{label} has several runs with seed(s) {duplicated}; pairing is by seed")
    return {r["seed"]: r for r in runs}


def paired_test(a: List[Dict[str, Any]], b: List[Dict[str, Any]], metrics: Mapping[str, str] = BEST_METRICS,
                labels: Tuple[str, str] = ("--a", "--b")) -> Dict[str, Any]:
    """Two-tailed paired t-test (``scipy.stats.ttest_rel``) of each metric, runs paired by seed.

    Parameters
    ----------
    a, b : list of dict
        Runs of the two groups, each with a ``seed`` (distinct within a group) and the metric keys.
    metrics : mapping
        Output name -> run key, e.g. ``{'iou': 'best_iou'}``.
    labels : tuple of str
        How errors name the two groups.

    Returns
    -------
    dict
        ``paired_seeds`` and per metric ``{'mean_diff' (a - b), 't', 'p'}``; ``t`` and ``p`` are ``None``
        where not finite (every difference 0: both; every difference the same, not 0: ``t``, and ``p`` is 0),
        and the metric itself is ``None`` when a paired run lacks it.

    Raises
    ------
    ValueError
        When a group repeats a seed, or fewer than 2 seeds are in both groups.
    """
    from scipy.stats import ttest_rel

    by_seed = [_by_seed(a, labels[0]), _by_seed(b, labels[1])]
    common = sorted(set(by_seed[0]) & set(by_seed[1]), key=str)
    if len(common) < 2:
        raise ValueError(f"a paired t-test needs at least 2 seeds present in both groups; common seeds: {common}")
    result: Dict[str, Any] = {"paired_seeds": common}
    for metric, key in metrics.items():
        pairs = [(by_seed[0][s].get(key), by_seed[1][s].get(key)) for s in common]
        if any(x is None or y is None for x, y in pairs):
            result[metric] = None
            continue
        xa, xb = [x for x, _ in pairs], [y for _, y in pairs]
        with warnings.catch_warnings():  # equal differences: scipy warns
            warnings.simplefilter("ignore", RuntimeWarning)
            test = ttest_rel(xa, xb)
        result[metric] = {
            "mean_diff": sum(x - y for x, y in pairs) / len(common),
            "t": _finite(test.statistic),
            "p": _finite(test.pvalue),
        }
    return result
