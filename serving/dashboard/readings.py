"""One reading of the counters the dashboard charts, and one chart point from two readings.

Without a Prometheus the dashboard samples serving's own registry and the speed job's
/metrics itself (``serving.dashboard.sampler``). A reading keeps only what the charts
need, summed over the labels they do not show, so the samples kept stay small; a point
is every chart's value over the time between two readings, as the PromQL of
``serving.dashboard.prometheus`` computes it from a Prometheus.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from serving.metrics_text import Samples
from serving.dashboard.metric_math import Buckets, quantile, rate

OWN_ROUTES = "/dashboard"
"""Route prefix of the dashboard itself: its polling is left out of the serving charts."""
ACCEPTED = "accepted"

Point = dict[tuple[str, str], float]
"""(chart id, series name) -> the value at one time."""


@dataclass(frozen=True)
class SpeedReading:
    """The speed job's counters, from its driver's /metrics."""

    landed_events: float = 0.0
    source_lag: dict[str, float] = field(default_factory=dict)  # query -> records
    dead_letters: dict[str, float] = field(default_factory=dict)  # reason -> rows


@dataclass(frozen=True)
class Reading:
    at: float  # unix seconds
    ingested: dict[str, float] = field(default_factory=dict)  # outcome -> events
    requests: dict[tuple[str, str], float] = field(default_factory=dict)  # (route, status) -> requests
    latency: dict[str, dict[float, float]] = field(default_factory=dict)  # route -> cumulative buckets
    freshness: dict[float, float] = field(default_factory=dict)  # cumulative buckets
    job_lag: float | None = None  # serving's view of the speed job's lag (its progress rows)
    speed: SpeedReading | None = None  # None: the speed job's /metrics did not answer


def read_serving(found: Samples) -> tuple[dict[str, float], dict[tuple[str, str], float],
                                          dict[str, dict[float, float]], dict[float, float]]:
    """(ingested by outcome, requests by route and status, latency buckets by route, freshness buckets)."""
    ingested: dict[str, float] = {}
    requests: dict[tuple[str, str], float] = defaultdict(float)
    latency: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    freshness: dict[float, float] = {}
    for (name, key), value in found.items():
        labels = dict(key)
        route = labels.get("route", "")
        if name == "lambdarec_ingested_events_total":
            ingested[labels["outcome"]] = value
        elif name == "lambdarec_freshness_seconds_bucket":
            freshness[float(labels["le"])] = value
        elif route.startswith(OWN_ROUTES):
            continue
        elif name == "lambdarec_request_seconds_count":
            requests[(route, labels["status"])] += value
        elif name == "lambdarec_request_seconds_bucket":
            latency[route][float(labels["le"])] += value
    return ingested, dict(requests), {route: dict(b) for route, b in latency.items()}, freshness


def read_speed(found: Samples) -> SpeedReading:
    """The speed job's events landed, source lag by query and dead letters by reason."""
    landed = 0.0
    lag: dict[str, float] = {}
    dead: dict[str, float] = {}
    for (name, key), value in found.items():
        labels = dict(key)
        if name == "lambdarec_speed_rows_landed_total" and labels.get("table") == "events":
            landed += value
        elif name == "lambdarec_speed_source_lag_records":
            lag[labels.get("query", "")] = value
        elif name == "lambdarec_dead_letters_total":
            dead[labels.get("reason", "")] = value
    return SpeedReading(landed, lag, dead)


def read(at: float, serving: Samples, speed: Samples | None, job_lag: float | None) -> Reading:
    ingested, requests, latency, freshness = read_serving(serving)
    return Reading(at, ingested, requests, latency, freshness, job_lag,
                   None if speed is None else read_speed(speed))


def _put(point: Point, chart: str, name: str, value: float | None) -> None:
    if value is not None and math.isfinite(value):
        point[(chart, name)] = value


def _rates(before: dict, after: dict, seconds: float) -> dict:
    """Each counter's rate; one new since ``before`` counted from 0."""
    return {key: rate(before.get(key, 0.0), value, seconds) or 0.0 for key, value in after.items()}


FRESHNESS_QUANTILES = ((0.5, "p50"), (0.95, "p95"))
LATENCY_QUANTILES = ((0.5, "p50"), (0.99, "p99"))


def _quantiles(point: Point, chart: str, label: str, before: Buckets, after: Buckets,
               quantiles: tuple[tuple[float, str], ...], scale: float = 1.0) -> None:
    for q, name in quantiles:
        value = quantile(q, before, after)
        _put(point, chart, f"{name} {label}".strip(), None if value is None else value * scale)


def point(before: Reading, after: Reading) -> Point:
    """Every chart's value between two readings: rates per second, quantiles of what was observed,
    gauges as ``after`` read them (negative: unknown, left out)."""
    seconds = after.at - before.at
    out: Point = {}
    ingested = _rates(before.ingested, after.ingested, seconds)
    _put(out, "events", ACCEPTED, ingested.get(ACCEPTED, 0.0))
    _quantiles(out, "freshness", "", before.freshness, after.freshness, FRESHNESS_QUANTILES)
    requests = _rates(before.requests, after.requests, seconds)
    by_route: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    for (route, status), value in requests.items():
        by_route[route] += value
        if status[:1] in ("4", "5"):
            errors[f"{status[0]}xx {route}"] += value
    for route, value in by_route.items():
        _put(out, "requests", route, value)
        _quantiles(out, "latency", route, before.latency.get(route, {}), after.latency.get(route, {}),
                   LATENCY_QUANTILES, scale=1000)
    for outcome, value in ingested.items():
        if outcome != ACCEPTED:
            errors[f"ingest {outcome}"] += value
    _put(out, "errors", "all", sum(errors.values()))
    for name, value in errors.items():
        _put(out, "errors", name, value)
    if after.job_lag is not None and after.job_lag >= 0:
        _put(out, "lag", "serving: speed job", after.job_lag)
    if before.speed is not None and after.speed is not None:
        _put(out, "events", "landed", rate(before.speed.landed_events, after.speed.landed_events, seconds))
        dead = _rates(before.speed.dead_letters, after.speed.dead_letters, seconds)
        _put(out, "dead_letters", "all", sum(dead.values()))
        for reason, value in dead.items():
            _put(out, "dead_letters", reason, value)
    if after.speed is not None:
        for query, lag in after.speed.source_lag.items():
            if lag >= 0:
                _put(out, "lag", query, lag)
    return out
