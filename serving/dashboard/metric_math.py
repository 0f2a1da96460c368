"""Rates and quantiles from two readings of cumulative Prometheus series, as PromQL computes them.

The dashboard charts without a Prometheus by sampling the counters and histograms
itself; these pure functions turn two samples into what ``rate`` and
``histogram_quantile`` would say over the time between them, so both sources of
the dashboard mean the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Buckets = Mapping[float, float]
"""A histogram's cumulative bucket counts by upper bound (``le``), ``math.inf`` included."""


def increase(before: float, after: float) -> float:
    """How much a counter grew; one that went down was restarted from 0 (Prometheus' reset rule)."""
    return after - before if after >= before else after


def rate(before: float, after: float, seconds: float) -> float | None:
    """Per-second increase of a counter over ``seconds`` (None over no time)."""
    return increase(before, after) / seconds if seconds > 0 else None


def bucket_increases(before: Buckets, after: Buckets) -> list[tuple[float, float]]:
    """(le, cumulative increase) per bucket, ascending. A histogram whose total went down was
    restarted: its increase is then all of ``after``. Counts are kept non-decreasing in ``le``."""
    restarted = after.get(math.inf, 0.0) < before.get(math.inf, 0.0)
    out: list[tuple[float, float]] = []
    running = 0.0
    for le in sorted(after):
        running = max(running, after[le] if restarted else increase(before.get(le, 0.0), after[le]))
        out.append((le, running))
    return out


def quantile(q: float, before: Buckets, after: Buckets) -> float | None:
    """The ``q``-quantile of what was observed between two readings, interpolated linearly
    within its bucket (``histogram_quantile``); None when nothing was observed. A rank in the
    +Inf bucket answers the highest finite bound, as Prometheus does."""
    increases = bucket_increases(before, after)
    if not increases or increases[-1][1] <= 0 or not 0 <= q <= 1:
        return None
    rank = q * increases[-1][1]
    lower, below = 0.0, 0.0
    for le, count in increases:
        if count >= rank and count > below:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower
