"""Statistics of an observer study: exact binomial CIs and tests against chance, and rater agreement (Cohen's and
Fleiss' κ).

scipy and scikit-learn are imported inside the functions that use them, so importing the study package (as
``study serve`` does) stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["binomial_p_value", "binomial_summary", "clopper_pearson", "cohen_kappa", "fleiss_kappa",
           "percent_agreement"]


def _check_counts(successes: int, n: int) -> tuple[int, int]:
    successes, n = int(successes), int(n)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    return successes, n


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) CI of a binomial proportion, as proportions; ``(nan, nan)`` for ``n = 0``.

    >>> low, high = clopper_pearson(5, 10)
    >>> round(low, 4), round(high, 4)
    (0.1871, 0.8129)
    """
    successes, n = _check_counts(successes, n)
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def binomial_p_value(successes: int, n: int, chance: float = 0.5) -> float:
    """Two-sided exact binomial test of ``successes`` of ``n`` against the proportion ``chance``; NaN for ``n = 0``.

    >>> round(binomial_p_value(59, 100), 4)
    0.0886
    """
    successes, n = _check_counts(successes, n)
    if n == 0:
        return math.nan
    from scipy.stats import binomtest

    return float(binomtest(successes, n, p=chance, alternative="two-sided").pvalue)


def binomial_summary(successes: int, n: int, chance: float = 0.5, confidence: float = 0.95) -> dict[str, Any]:
    """``n``, ``successes``, ``percent`` and its exact CI (``ci_low``, ``ci_high``, in percent) and the two-sided
    ``p_value`` against ``chance``; NaN where ``n = 0``.

    >>> summary = binomial_summary(5, 10)
    >>> summary["percent"], round(summary["ci_low"], 2), summary["p_value"]
    (50.0, 18.71, 1.0)
    """
    successes, n = _check_counts(successes, n)
    low, high = clopper_pearson(successes, n, confidence)
    return {"n": n, "successes": successes, "percent": 100.0 * successes / n if n else math.nan,
            "ci_low": 100.0 * low, "ci_high": 100.0 * high, "p_value": binomial_p_value(successes, n, chance)}


def _paired(a: Sequence[Any], b: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"the two raters need one label per item each, got {len(a)} and {len(b)}")
    return a, b


def percent_agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Share of items on which two raters give the same label, in percent; NaN without items.

    >>> percent_agreement([1, 1, 0, 0], [1, 0, 0, 0])
    75.0
    """
    a, b = _paired(a, b)
    return 100.0 * sum(x == y for x, y in zip(a, b)) / len(a) if a else math.nan


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Cohen's κ of two raters' labels of the same items (any hashable labels, e.g. booleans).

    NaN without items, and where both raters give every item one and the same label: the agreement expected by
    chance is then 1 and κ = (1 - 1) / (1 - 1) is undefined, though the raters agree perfectly.

    >>> round(cohen_kappa([1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]), 3)
    0.667
    >>> cohen_kappa([1, 1], [1, 1])
    nan
    """
    a, b = _paired(a, b)
    if len(set(a) | set(b)) < 2:
        return math.nan
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(a, b))


def fleiss_kappa(counts: Any) -> float:
    """Fleiss' κ of an items x categories matrix: ``counts[i, j]`` raters put item i in category j, every item
    rated by the same number of raters (at least 2). NaN without items, or when every rating falls in one
    category (chance agreement 1).

    Fleiss (1971) as on Wikipedia's "Fleiss' kappa" page: 14 raters, 10 items, 5 categories, κ = 0.210.

    >>> round(fleiss_kappa([[2, 0], [0, 2], [2, 0], [1, 1]]), 3)
    0.467
    """
    counts = np.asarray(counts, dtype=float)
    if counts.size == 0:
        return math.nan
    if counts.ndim != 2:
        raise ValueError(f"need an items x categories matrix, got shape {counts.shape}")
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError("counts must be non-negative whole numbers of raters")
    raters = counts.sum(axis=1)
    if np.any(raters != raters[0]) or raters[0] < 2:
        raise ValueError(f"every item needs the same number (>= 2) of raters, got {sorted(set(raters.astype(int)))}")
    n = raters[0]
    per_item = (np.sum(counts * counts, axis=1) - n) / (n * (n - 1))
    category_share = counts.sum(axis=0) / counts.sum()
    observed, expected = float(per_item.mean()), float(np.sum(category_share**2))
    if math.isclose(expected, 1.0):
        return math.nan
    return (observed - expected) / (1.0 - expected)
