"""The dashboard's charts from a Prometheus (settings ``prometheus_url``), over its query_range API.

Where a Prometheus scrapes serving and the speed job (ops/prometheus/prometheus.yml),
it already holds their history, across restarts and for every serving replica; the
PromQL here computes what ``serving.dashboard.readings`` computes from serving's own
samples, per chart and series, so the page reads both the same way. Answers are
cached for a moment, so several open dashboards share one round of queries.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import httpx

from serving.dashboard.readings import OWN_ROUTES
from serving.dashboard.sampler import SeriesMap

WINDOW_S = 600.0
STEP_S = 5.0  # the scrape interval of ops/prometheus/prometheus.yml
RATE = "30s"  # rate() window: several scrapes
CACHE_S = 1.5
TIMEOUT_S = 2.0

API = f'route!~"{OWN_ROUTES}.*"'  # the dashboard's own polling is left out, as in serving's samples
ERRORS = (f'sum by (route, class) (label_replace(rate(lambdarec_request_seconds_count{{status=~"[45]..",{API}}}[{RATE}]),'
          ' "class", "${1}xx", "status", "(.).."))')
INGEST_ERRORS = f'sum by (outcome) (rate(lambdarec_ingested_events_total{{outcome!="accepted"}}[{RATE}]))'


def _quantile(q: float, histogram: str, by: str, selector: str = "", scale: str = "") -> str:
    return f"{scale}histogram_quantile({q}, sum by ({by}) (rate({histogram}_bucket{selector}[{RATE}])))"


class Query(NamedTuple):
    chart: str
    name: str  # the series name, before the values of ``labels``
    promql: str
    labels: tuple[str, ...] = ()


QUERIES = (
    Query("events", "accepted", f'sum(rate(lambdarec_ingested_events_total{{outcome="accepted"}}[{RATE}]))'),
    Query("events", "landed", f'sum(rate(lambdarec_speed_rows_landed_total{{table="events"}}[{RATE}]))'),
    Query("lag", "", "max by (query) (lambdarec_speed_source_lag_records >= 0)", ("query",)),
    Query("lag", "serving: speed job", "max(lambdarec_speed_job_lag_records >= 0)"),
    Query("freshness", "p50", _quantile(0.5, "lambdarec_freshness_seconds", "le")),
    Query("freshness", "p95", _quantile(0.95, "lambdarec_freshness_seconds", "le")),
    Query("requests", "", f"sum by (route) (rate(lambdarec_request_seconds_count{{{API}}}[{RATE}]))", ("route",)),
    Query("latency", "p50", _quantile(0.5, "lambdarec_request_seconds", "route, le", f"{{{API}}}", "1000 * "), ("route",)),
    Query("latency", "p99", _quantile(0.99, "lambdarec_request_seconds", "route, le", f"{{{API}}}", "1000 * "), ("route",)),
    Query("errors", "all", f"(sum({ERRORS}) or vector(0)) + (sum({INGEST_ERRORS}) or vector(0))"),
    Query("errors", "", ERRORS, ("class", "route")),
    Query("errors", "ingest", INGEST_ERRORS, ("outcome",)),
    Query("dead_letters", "all", f"sum(rate(lambdarec_dead_letters_total[{RATE}]))"),
    Query("dead_letters", "", f"sum by (reason) (rate(lambdarec_dead_letters_total[{RATE}]))", ("reason",)),
)


def series_name(query: Query, labels: dict[str, str]) -> str:
    return " ".join(part for part in (query.name, *(labels.get(label, "") for label in query.labels)) if part)


def matrix_series(query: Query, body: dict) -> SeriesMap:
    """A query_range answer as chart series; NaN and infinite values (no observations) are left out."""
    out: SeriesMap = {}
    for result in body["data"]["result"]:
        t: list[float] = []
        y: list[float] = []
        for at, text in result["values"]:
            value = float(text)
            if math.isfinite(value):
                t.append(float(at))
                y.append(value)
        if t:
            out.setdefault(query.chart, {})[series_name(query, result["metric"])] = (t, y)
    return out


class PrometheusSource:
    def __init__(self, url: str, clock: Callable[[], float] = time.time, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self.clock = clock
        self.transport = transport
        self._lock = threading.Lock()
        self._cached: tuple[float, SeriesMap, list[str]] | None = None
        # one client for every read: a new one builds an SSL context, about 40 ms holding the GIL
        self._client: httpx.Client | None = None

    def series(self) -> tuple[SeriesMap, list[str]]:
        """Every chart's series over the last ``WINDOW_S``, and what could not be read."""
        with self._lock:
            now = self.clock()
            if self._cached is None or now - self._cached[0] >= CACHE_S:
                self._cached = (now, *self._query_all(now))
            return self._cached[1], self._cached[2]

    def _query_all(self, now: float) -> tuple[SeriesMap, list[str]]:  # under ``_lock``
        out: SeriesMap = {}
        params = {"start": now - WINDOW_S, "end": now, "step": STEP_S}
        self._client = client = self._client or httpx.Client(base_url=self.url, timeout=TIMEOUT_S,
                                                             transport=self.transport)
        for query in QUERIES:
            try:
                response = client.get("/api/v1/query_range", params={"query": query.promql, **params})
                response.raise_for_status()
                found = matrix_series(query, response.json())
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                return out, [f"Prometheus at {self.url} did not answer {query.promql!r}: {exc}"]
            for chart, named in found.items():
                out.setdefault(chart, {}).update(named)
        return out, []
