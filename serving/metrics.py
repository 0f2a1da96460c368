"""Prometheus metrics and the per-request timing/log middleware.

Each app has its own registry, so several apps in one process (tests) never
clash. Routes are labelled by their template (``/users/{user_id}/...``), never
the raw path, to keep label cardinality bounded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lambdarec.registry import PUBLISHED, REJECTED, current_statuses_in
from schemas.tables import MODELS

if TYPE_CHECKING:
    from serving.views.model_store import ModelStore
    from serving.views.speed.view import SpeedView

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's switch to multiprocess mode, read at import

log = logging.getLogger("serving.requests")


class RegistryGauges(Collector):
    """Model and training gauges from the registry (``lambdarec.registry``): batch runs are short-lived,
    so serving, which follows the registry anyway, exports what they recorded.

    Computed when scraped from the rows last observed rather than kept in gauges: every
    worker holds the same registry, and a labelled gauge cannot drop a label in
    prometheus_client's multiprocess mode, so an old run's stages would linger.
    """

    def __init__(self) -> None:
        self._observed: tuple[pa.Table, int | None] = (MODELS.schema.empty_table(), None)  # one snapshot

    def observe(self, registry: pa.Table, serving_version: int | None) -> None:
        self._observed = (registry, serving_version)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        table, serving_version = self._observed
        rows, statuses = table.to_pylist(), current_statuses_in(table)
        models = GaugeMetricFamily("lambdarec_models", "Model versions in the registry by current status.",
                                   labels=["status"])
        for status in sorted({row["status"] for row in statuses.values()}):
            models.add_metric([status], sum(row["status"] == status for row in statuses.values()))
        yield models
        published = [row for row in rows
                     if row["status"] == PUBLISHED and row["model_version"] == serving_version]
        yield GaugeMetricFamily(
            "lambdarec_model_age_seconds", "Seconds since the served model was published (-1: none).",
            value=time.time() - published[-1]["recorded_at"].timestamp() if published else -1)
        gated = [row for _, row in sorted(statuses.items()) if row["status"] in (PUBLISHED, REJECTED)]
        yield GaugeMetricFamily(
            "lambdarec_training_last_published",
            "1: the newest gated training run was published; 0: the publish gate rejected it (-1: none yet).",
            value=-1 if not gated else int(gated[-1]["status"] == PUBLISHED))
        trained = [row for row in sorted(rows, key=lambda row: (row["model_version"], row["recorded_at"]))
                   if row["metrics"]]
        metrics = json.loads(trained[-1]["metrics"]) if trained else {}
        stages = GaugeMetricFamily("lambdarec_training_stage_seconds",
                                   "Duration of each stage of the newest trained model's run.", labels=["stage"])
        for stage, seconds in (metrics.get("stage_seconds") or {}).items():
            stages.add_metric([stage], seconds)
        yield stages
        values = GaugeMetricFamily("lambdarec_training_metric",
                                   "Holdout metrics of the newest trained model (model_ and popularity_).",
                                   labels=["metric"])
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.add_metric([name], value)
        yield values


class Metrics:
    """Serving's metrics. ``registry`` holds the instruments; ``exposition`` is what /metrics and the
    dashboard read: the same registry in one process, and under ``--workers`` every worker's
    counters and histograms summed (and each view gauge by the worst worker) from
    prometheus_client's multiprocess files."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "lambdarec_request_seconds",
            "Request latency by route.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.events = Counter(
            "lambdarec_ingested_events",
            "Events taken at the ingestion edge, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.auth_refused = Counter(
            "lambdarec_auth_refused",
            "Requests refused for their credential: reason no_key (401: none, unknown or revoked) or scope "
            "(403: a live key without the route's scope), by the scope the route needs.",
            ["reason", "scope"],
            registry=self.registry,
        )
        self.audit_failures = Counter(
            "lambdarec_audit_failures",
            "Audited actions whose audit_log row could not be committed (the action itself stood).",
            registry=self.registry,
        )
        self.recommendations = Counter(
            "lambdarec_recommendations",
            "Recommendation responses by strategy.",
            ["strategy"],
            registry=self.registry,
        )
        # Each worker has its own views; under --workers the modes say which one a scrape shows.
        self.model_version = Gauge(
            "lambdarec_model_version", "Version of the model being served (-1: none; the oldest over workers).",
            registry=self.registry, multiprocess_mode="livemin",
        )
        self.speed_view_age = Gauge(
            "lambdarec_speed_view_age_seconds",
            "Seconds since the speed view applied an update (-1: never; the largest over workers).",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.speed_view_lag = Gauge(
            "lambdarec_speed_view_lag_records",
            "Records on speed-updates the view has not applied yet (-1: not following; the largest over workers).",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.speed_job_lag = Gauge(
            "lambdarec_speed_job_lag_records",
            "The speed job's source lag from its latest progress row (-1: unknown).",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.freshness = Histogram(
            "lambdarec_freshness_seconds",
            "Event accepted by the platform (received_at) -> visible in this process's speed view: the SLO "
            "metric (under --workers, once per worker).",
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300),
        )
        self.speed_rows_skipped = Counter(
            "lambdarec_speed_bootstrap_skipped_rows",
            "Rows of the Delta speed tables the speed view skipped at start-up because the speed-updates "
            "contract cannot read them (a non-finite weight, a timestamp past year 9999), by table.",
            ["table"],
            registry=self.registry,
        )
        self.speed_view_events_version = Gauge(
            "lambdarec_speed_view_events_version",
            "Newest events table version the speed view applied (-1: none; the oldest over workers).",
            registry=self.registry, multiprocess_mode="livemin",
        )
        self.speed_view_evictions = Counter(
            "lambdarec_speed_view_evictions",
            "Entries the speed view dropped, by entry (user, item, trending rows, recall_record: an evicted user "
            "no longer remembered for a read-back) and reason (ttl: older than the horizon; cap).",
            ["entry", "reason"],
            registry=self.registry,
        )
        self.speed_view_entries = Gauge(
            "lambdarec_speed_view_entries",
            "Entries the speed view holds, by entry (user, interaction, item, trending rows, recall_record; the "
            "largest over workers).",
            ["entry"],
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.speed_view_recalls = Counter(
            "lambdarec_speed_view_recalls",
            "Requests of evicted users that waited for their interactions to be read back from the lake, by "
            "outcome (restored; late: answered without them after serve_recall_timeout_s; failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.registry_gauges = RegistryGauges()
        multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_ENV)
        if multiprocess_dir:
            self.exposition = CollectorRegistry()
            MultiProcessCollector(self.exposition, multiprocess_dir)
        else:
            self.exposition = self.registry
        self.exposition.register(self.registry_gauges)

    def observe_views(self, model_store: ModelStore, speed_view: SpeedView) -> None:
        """Set the view gauges from the serving model, the speed view's position and the registry's rows."""

        def number(value, scale: float = 1.0) -> float:
            return -1 if value is None else value / scale

        model, position = model_store.current, speed_view.position()
        self.model_version.set(model.version if model else -1)
        self.observe_registry(model_store.registry_rows, model.version if model else None)
        self.speed_view_age.set(number(position["age_ms"], 1000))
        self.speed_view_lag.set(number(position["lag_records"]))
        self.speed_job_lag.set(number(position["speed_job_lag_records"]))
        self.speed_view_events_version.set(number(position["events_version"]))
        for entry, count in speed_view.sizes().items():
            self.speed_view_entries.labels(entry).set(count)

    def observe_registry(self, registry: pa.Table, serving_version: int | None) -> None:
        self.registry_gauges.observe(registry, serving_version)

    def render(self) -> bytes:
        return generate_latest(self.exposition)


class RequestMetrics:
    """ASGI middleware: latency histogram and one structured log line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.request_seconds.labels(scope["method"], route, str(status)).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "key_id": scope.get("state", {}).get("key_id"),  # serving.api.security: who called, never the token
                },
            )
