"""Pure arithmetic for the load, leak and soak benchmarks: percentiles, spreads, slopes.

No I/O, so ``tests/unit/test_benchmark_stats.py`` can check every number a table shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100) by linear interpolation between closest ranks (numpy's
    default, "linear"); NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0-100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latencies(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of *values* (seconds)."""
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """min, median and max of *values*."""
    return {
        "min": min(values) if values else math.nan,
        "median": percentile(values, 50),
        "max": max(values) if values else math.nan,
    }


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of *ys* over *xs* (units of y per unit of x); NaN for fewer than
    two points or no spread in *xs*."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x values, {len(ys)} y values")
    n = len(xs)
    if n < 2:
        return math.nan
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return math.nan
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def ms(seconds: float) -> str:
    """A duration for a table: whole milliseconds, ``none`` for NaN (nothing measured)."""
    return "none" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"
