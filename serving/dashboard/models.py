"""The body of ``GET /dashboard/data``, so the OpenAPI document describes it, and the charts it carries."""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import BaseModel, Field

FRESHNESS_SLO_S = 5.0
"""The freshness SLO (ops/prometheus/alerts.yml: p95 within 5 s), drawn on the freshness chart."""


class ChartSpec(NamedTuple):
    id: str
    title: str
    unit: str
    threshold: float | None = None
    log: bool = False  # spans orders of magnitude (milliseconds to minutes)


CHARTS = (
    ChartSpec("events", "Events in (accepted at the API) and landed (speed job → Delta events)", "events/s"),
    ChartSpec("lag", "Source lag of the speed job's queries", "records"),
    ChartSpec("freshness", "Freshness: accepted → visible in serving's speed view", "s", FRESHNESS_SLO_S, log=True),
    ChartSpec("requests", "Serving requests by route", "requests/s"),
    ChartSpec("latency", "Serving latency by route", "ms", log=True),
    ChartSpec("errors", "Errors by kind (status class and route; ingest outcomes)", "per s"),
    ChartSpec("dead_letters", "Dead letters by reason", "rows/s"),
)


class Series(BaseModel):
    name: str
    t: list[float] = Field(description="Unix seconds of each point.")
    y: list[float] = Field(description="The value at each time in t.")


class Chart(BaseModel):
    id: str
    title: str
    unit: str
    threshold: float | None = Field(None, description="A level to draw across the chart (the freshness SLO).")
    log: bool = Field(False, description="Draw the values on a log scale (they span orders of magnitude).")
    series: list[Series]


class TrendingItem(BaseModel):
    item_id: str
    score: float = Field(description="The item's weight in the speed layer's trending window.")


class Trending(BaseModel):
    items: list[TrendingItem] = Field(description="Global trending in serving's own speed view, best first.")
    window_start: str | None = Field(description="Start of the sliding window they were counted over.")


class ModelVersion(BaseModel):
    model_version: int
    status: str = Field(description="The version's newest status in the registry (published, rejected, ...).")
    recorded_at: float = Field(description="Unix seconds of that status.")
    metric: float | None = Field(description="The holdout metric the publish gate compares (None: not evaluated).")
    baseline: float | None = Field(description="Popularity's figure for the same metric on the same holdout.")
    serving: bool = Field(description="This process serves this version.")


class Models(BaseModel):
    metric: str = Field(description="The metric's name, e.g. ndcg_at_10 (settings gate_metric at eval_k).")
    versions: list[ModelVersion] = Field(description="Every version in the registry, oldest first.")


class DashboardData(BaseModel):
    source: Literal["prometheus", "local"] = Field(
        description="Where the charts come from: a Prometheus (settings prometheus_url), or serving's own samples "
        "of its metrics and the speed job's /metrics.")
    generated_at: float = Field(description="Unix seconds.")
    window_s: float = Field(description="How far back the charts reach.")
    charts: list[Chart]
    trending: Trending
    models: Models
    notes: list[str] = Field(description="What could not be read this time (an unreachable speed job or Prometheus).")
