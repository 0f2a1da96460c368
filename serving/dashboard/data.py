"""What ``GET /dashboard/data`` answers: the charts from Prometheus or serving's own samples,
trending from serving's speed view, and the model registry's versions.

Built once per app beside its services. Without ``prometheus_url`` it owns the
sampler's poller, which the app's lifespan starts and stops with the services.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa

from lambdarec.registry import current_statuses_in
from serving.dashboard.models import CHARTS, Chart, DashboardData, Models, ModelVersion, Series, Trending, TrendingItem
from serving.dashboard.prometheus import WINDOW_S, PrometheusSource
from serving.dashboard.sampler import POINTS, SAMPLE_S, Sampler, SeriesMap
from serving.services import Services
from serving.poller import Poller
from serving.recommend import trending

TRENDING_K = 10


def charts(found: SeriesMap) -> list[Chart]:
    """Every chart of ``CHARTS``, in order, with its series by name ("all" first)."""
    out = []
    for spec in CHARTS:
        named = found.get(spec.id, {})
        ordered = sorted(named, key=lambda name: (name != "all", name))
        out.append(Chart(id=spec.id, title=spec.title, unit=spec.unit, threshold=spec.threshold, log=spec.log,
                         series=[Series(name=name, t=named[name][0], y=named[name][1]) for name in ordered]))
    return out


def _metric(metrics: str | None, name: str) -> float | None:
    value = json.loads(metrics).get(name) if metrics else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def models(registry: pa.Table, metric: str, serving_version: int | None) -> Models:
    """Each version's newest status, with the gate metric and popularity's from its newest row that has them."""
    evaluated: dict[int, str] = {}
    for row in sorted(registry.to_pylist(), key=lambda row: row["recorded_at"]):
        if row["metrics"]:
            evaluated[row["model_version"]] = row["metrics"]
    versions = [
        ModelVersion(
            model_version=version, status=row["status"], recorded_at=row["recorded_at"].timestamp(),
            metric=_metric(evaluated.get(version), f"model_{metric}"),
            baseline=_metric(evaluated.get(version), f"popularity_{metric}"),
            serving=version == serving_version,
        )
        for version, row in sorted(current_statuses_in(registry).items())
    ]
    return Models(metric=metric, versions=versions)


class Dashboard:
    """One app's dashboard: its source of charts (Prometheus, or a sampler it runs) and its services."""

    def __init__(self, services: Services):
        self.services = services
        settings = services.settings
        self.prometheus = PrometheusSource(settings.prometheus_url) if settings.prometheus_url else None
        self.sampler: Sampler | None = None
        self._poller: Poller | None = None
        if self.prometheus is None:
            self.sampler = Sampler(services.metrics.exposition, self._job_lag, settings.speed_metrics_endpoint,
                                   pause=services.idle_gate.pause)
            self._poller = Poller(SAMPLE_S, [self.sampler.sample])

    def _job_lag(self) -> float | None:
        return self.services.speed_view.position()["speed_job_lag_records"]

    def start(self) -> None:
        if self._poller is not None:
            self._poller.start()

    def stop(self) -> None:
        if self._poller is not None:
            self._poller.stop()

    def data(self) -> DashboardData:
        found: SeriesMap
        notes: list[str]
        if self.prometheus is not None:
            found, notes = self.prometheus.series()
            window_s = WINDOW_S
        else:
            assert self.sampler is not None
            found, notes, window_s = self.sampler.series(), self.sampler.notes(), POINTS * SAMPLE_S
        model = self.services.model_store.current
        return DashboardData(
            source="local" if self.prometheus is None else "prometheus",
            generated_at=time.time(),
            window_s=window_s,
            charts=charts(found),
            trending=self._trending(),
            models=models(self.services.model_store.registry_rows, self.services.settings.gate_metric_name,
                          model.version if model else None),
            notes=notes,
        )

    def _trending(self) -> Trending:
        """Global trending as ``GET /v1/trending`` answers it without a segment or filter."""
        found = trending(self.services.speed_view, [], TRENDING_K, self.services.attributes.available)
        if found is None:
            return Trending(items=[], window_start=None)
        items, _, _, window = found
        return Trending(items=[TrendingItem(item_id=s.item_id, score=s.score) for s in items], window_start=window)
