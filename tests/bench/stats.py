"""Summaries of samples: percentiles by the nearest-rank method, and means."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`th percentile (0 < p <= 100): a value that was observed."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max and mean of second values, in milliseconds, rounded to the microsecond."""
    return {
        "n": len(values_s),
        "p50": round(percentile(values_s, 50) * 1e3, 3),
        "p90": round(percentile(values_s, 90) * 1e3, 3),
        "p99": round(percentile(values_s, 99) * 1e3, 3),
        "max": round(max(values_s) * 1e3, 3) if values_s else math.nan,
        "mean": round(mean(values_s) * 1e3, 3),
    }
