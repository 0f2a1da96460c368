"""Prometheus metrics and the per-request timing/log middleware.

Each app has its own registry, so several apps in one process (tests) never
clash. Routes are labelled by their template (``/users/{user_id}/...``), never
the raw path, to keep label cardinality bounded.
"""

from __future__ import annotations

import json
import logging
import time

import pyarrow as pa

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lambdarec.registry import PUBLISHED, REJECTED, current_statuses_in

log = logging.getLogger("serving.requests")


class Metrics:
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
        self.recommendations = Counter(
            "lambdarec_recommendations",
            "Recommendation responses by strategy.",
            ["strategy"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "lambdarec_model_version", "Version of the model being served (-1: none).", registry=self.registry
        )
        self.speed_view_age = Gauge(
            "lambdarec_speed_view_age_seconds",
            "Seconds since the speed view applied an update (-1: never).",
            registry=self.registry,
        )
        self.speed_view_lag = Gauge(
            "lambdarec_speed_view_lag_records",
            "Records on speed-updates the view has not applied yet (-1: not following).",
            registry=self.registry,
        )

        self.speed_job_lag = Gauge(
            "lambdarec_speed_job_lag_records",
            "The speed job's source lag from its latest progress row (-1: unknown).",
            registry=self.registry,
        )
        self.freshness = Histogram(
            "lambdarec_freshness_seconds",
            "Event accepted by the platform (received_at) -> visible in this process's speed view: the SLO metric.",
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300),
        )
        self.model_age = Gauge(
            "lambdarec_model_age_seconds", "Seconds since the served model was published (-1: none).",
            registry=self.registry,
        )
        self.models = Gauge(
            "lambdarec_models", "Model versions in the registry by current status.", ["status"], registry=self.registry
        )
        self.training_last_published = Gauge(
            "lambdarec_training_last_published",
            "1: the newest gated training run was published; 0: the publish gate rejected it (-1: none yet).",
            registry=self.registry,
        )
        self.training_stage = Gauge(
            "lambdarec_training_stage_seconds", "Duration of each stage of the newest trained model's run.",
            ["stage"], registry=self.registry,
        )
        self.training_metric = Gauge(
            "lambdarec_training_metric", "Holdout metrics of the newest trained model (model_ and popularity_).",
            ["metric"], registry=self.registry,
        )
        self.speed_view_events_version = Gauge(
            "lambdarec_speed_view_events_version",
            "Newest events table version the speed view applied (-1: none).",
            registry=self.registry,
        )

    def observe_views(self, model, position: dict, registry: pa.Table) -> None:
        """Set the view gauges from the serving model, the speed view's position and the registry's rows."""

        def number(value, scale: float = 1.0) -> float:
            return -1 if value is None else value / scale

        self.model_version.set(model.version if model else -1)
        self.observe_registry(registry, model.version if model else None)
        self.speed_view_age.set(number(position["age_ms"], 1000))
        self.speed_view_lag.set(number(position["lag_records"]))
        self.speed_job_lag.set(number(position["speed_job_lag_records"]))
        self.speed_view_events_version.set(number(position["events_version"]))

    def observe_registry(self, registry: pa.Table, serving_version: int | None) -> None:
        """Model and training gauges from the registry (``lambdarec.registry``): batch runs are short-lived,
        so serving, which follows the registry anyway, exports what they recorded."""
        statuses = current_statuses_in(registry)
        self.models.clear()
        for status in {row["status"] for row in statuses.values()}:
            self.models.labels(status).set(sum(row["status"] == status for row in statuses.values()))
        published = [row for row in registry.to_pylist()
                     if row["status"] == PUBLISHED and row["model_version"] == serving_version]
        self.model_age.set(time.time() - published[-1]["recorded_at"].timestamp() if published else -1)
        gated = [row for _, row in sorted(statuses.items()) if row["status"] in (PUBLISHED, REJECTED)]
        self.training_last_published.set(-1 if not gated else int(gated[-1]["status"] == PUBLISHED))
        trained = [row for row in sorted(registry.to_pylist(), key=lambda row: (row["model_version"], row["recorded_at"]))
                   if row["metrics"]]
        self.training_stage.clear()
        self.training_metric.clear()
        if trained:
            metrics = json.loads(trained[-1]["metrics"])
            for stage, seconds in (metrics.get("stage_seconds") or {}).items():
                self.training_stage.labels(stage).set(seconds)
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.training_metric.labels(name).set(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
                },
            )
