"""The dashboard's arithmetic and assembly: rates and quantiles from counter and bucket deltas (as PromQL
computes them), readings of serving's and the speed job's metrics, the sampler's bounded ring, Prometheus
answers, and the registry's versions."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import httpx
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from serving.metrics_text import samples
from schemas.tables import MODELS
from serving.dashboard.data import charts, models
from serving.dashboard.models import CHARTS
from serving.dashboard.prometheus import QUERIES, PrometheusSource, matrix_series
from serving.dashboard.readings import Reading, SpeedReading, point, read
from serving.dashboard.sampler import Sampler, registry_samples
from serving.dashboard.metric_math import bucket_increases, increase, quantile, rate
from serving.metrics import Metrics
from speed.metrics import SpeedMetrics
from tests.plugins.broker import free_port

pytestmark = pytest.mark.unit
INF = math.inf


# -- metric_math ---------------------------------------------------------------------


def test_a_counter_rate_is_its_increase_per_second_and_a_restart_counts_from_zero():
    assert rate(10, 30, 4) == 5
    assert increase(100, 7) == 7  # the process restarted: it counted 7 since
    assert rate(100, 7, 2) == 3.5
    assert rate(1, 2, 0) is None


def test_quantiles_interpolate_within_the_bucket_of_the_increase():
    before = {0.1: 10, 1.0: 10, 5.0: 10, INF: 10}
    after = {0.1: 10, 1.0: 110, 5.0: 110, INF: 110}  # 100 new observations, all in (0.1, 1]
    assert quantile(0.5, before, after) == pytest.approx(0.1 + 0.9 * 0.5)
    assert quantile(0.95, before, after) == pytest.approx(0.1 + 0.9 * 0.95)
    # Prometheus' alert test case: every event in (5, 10]: p95 = 5 + 0.95 * 5.
    assert quantile(0.95, {}, {1: 0, 5: 0, 10: 60, INF: 60}) == pytest.approx(9.75)
    # the lowest bucket starts at 0
    assert quantile(0.5, {}, {0.1: 4, INF: 4}) == pytest.approx(0.05)


def test_a_quantile_in_the_inf_bucket_is_the_highest_finite_bound_and_nothing_observed_is_none():
    assert quantile(0.99, {}, {1: 0, 5: 0, INF: 3}) == 5
    assert quantile(0.5, {1: 2, INF: 2}, {1: 2, INF: 2}) is None
    assert quantile(0.5, {}, {}) is None


def test_a_histogram_that_went_down_was_restarted():
    before = {1: 50, INF: 50}
    after = {1: 2, INF: 4}
    assert bucket_increases(before, after) == [(1, 2), (INF, 4)]
    assert quantile(0.5, before, after) == pytest.approx(1.0)


# -- readings ------------------------------------------------------------------------


def serving_metrics(accepted: int, rejected: int, requests: dict[tuple[str, str], list[float]],
                    freshness: list[float]) -> Metrics:
    metrics = Metrics()
    metrics.events.labels("accepted").inc(accepted)
    if rejected:
        metrics.events.labels("rate_limited").inc(rejected)
    for (route, status), seconds in requests.items():
        for s in seconds:
            metrics.request_seconds.labels("GET", route, status).observe(s)
    for s in freshness:
        metrics.freshness.observe(s)
    return metrics


def test_a_point_has_every_charts_value_between_two_readings():
    speed = SpeedMetrics()
    speed.landed.labels("events").inc(100)
    speed.source_lag.labels("events").set(40)
    metrics = serving_metrics(10, 0, {("/v1/trending", "200"): [0.002] * 10}, [0.5] * 10)
    first = read(1000.0, registry_samples(metrics.registry), samples(generate_latest(speed.registry).decode()), 12)

    metrics.events.labels("accepted").inc(40)
    metrics.events.labels("rate_limited").inc(4)
    for _ in range(20):
        metrics.request_seconds.labels("GET", "/v1/trending", "200").observe(0.02)
    metrics.request_seconds.labels("POST", "/v1/events", "422").observe(0.001)
    metrics.request_seconds.labels("GET", "/v1/trending", "503").observe(0.001)
    metrics.request_seconds.labels("GET", "/dashboard/data", "200").observe(3)  # the dashboard's own: left out
    for _ in range(100):
        metrics.freshness.observe(0.8)
    speed.landed.labels("events").inc(60)
    speed.landed.labels("speed_user_interactions").inc(1000)  # not events
    speed.dead_letters.labels("malformed_json").inc(2)
    speed.source_lag.labels("events").set(5)
    second = read(1004.0, registry_samples(metrics.registry), samples(generate_latest(speed.registry).decode()), 3)

    values = point(first, second)
    assert values[("events", "accepted")] == 10
    assert values[("events", "landed")] == 15
    assert values[("lag", "events")] == 5 and values[("lag", "serving: speed job")] == 3
    assert values[("freshness", "p50")] == pytest.approx(0.75 + 0.25 * 0.5)
    assert values[("requests", "/v1/trending")] == pytest.approx(21 / 4)
    assert values[("requests", "/v1/events")] == pytest.approx(1 / 4)
    assert values[("latency", "p99 /v1/trending")] == pytest.approx(25, rel=0.05)  # ms
    assert values[("errors", "4xx /v1/events")] == values[("errors", "5xx /v1/trending")] == 0.25
    assert values[("errors", "ingest rate_limited")] == 1
    assert values[("errors", "all")] == 1.5
    assert values[("dead_letters", "malformed_json")] == values[("dead_letters", "all")] == 0.5
    assert not [key for key in values if "/dashboard" in key[1]]


def test_speed_charts_need_the_speed_job_in_both_readings_and_unknown_gauges_are_left_out():
    before = Reading(at=0.0, job_lag=-1, speed=None)
    after = Reading(at=2.0, job_lag=None, speed=SpeedReading(landed_events=500, source_lag={"events": -1}))
    values = point(before, after)
    assert ("events", "landed") not in values and ("dead_letters", "all") not in values
    assert not [key for key in values if key[0] == "lag"]
    assert values[("events", "accepted")] == 0 and values[("errors", "all")] == 0


# -- the sampler ---------------------------------------------------------------------


def test_the_sampler_keeps_a_bounded_ring_and_reports_an_unreachable_speed_job():
    clock = iter(float(t) for t in range(0, 1000, 2))
    metrics = Metrics()
    sampler = Sampler(metrics.exposition, lambda: None, f"http://127.0.0.1:{free_port()}/metrics",
                      clock=lambda: next(clock), points=4)
    for n in range(10):
        metrics.events.labels("accepted").inc(2 * n)
        sampler.sample()
    found = sampler.series()
    t, y = found["events"]["accepted"]
    assert t == [12.0, 14.0, 16.0, 18.0]  # the newest four
    # rates over the last five intervals (10 s): (sum of 2n for n = 5..9) / 10
    assert y[-1] == pytest.approx(2 * (5 + 6 + 7 + 8 + 9) / 10)
    assert "did not answer" in sampler.notes()[0]


# -- Prometheus ----------------------------------------------------------------------


def test_prometheus_answers_become_the_same_series_and_nan_is_left_out():
    errors = next(q for q in QUERIES if q.chart == "errors" and q.labels == ("class", "route"))
    body = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"route": "/v1/events", "class": "4xx"}, "values": [[100, "0.5"], [105, "NaN"], [110, "1"]]},
    ]}}
    assert matrix_series(errors, body) == {"errors": {"4xx /v1/events": ([100.0, 110.0], [0.5, 1.0])}}


def test_the_prometheus_source_asks_every_query_over_the_window_and_caches_the_answer():
    asked: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        value = [[995.0, "2"], [1000.0, "3"]]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"query": "events", "route": "/v1/events", "reason": "malformed_json"}, "values": value}]}})

    source = PrometheusSource("http://prometheus:9090/", clock=lambda: 1000.0, transport=httpx.MockTransport(answer))
    found, notes = source.series()
    assert notes == [] and len(asked) == len(QUERIES)
    assert {(p["start"], p["end"]) for p in asked} == {("400.0", "1000.0")}
    assert found["events"]["accepted"] == ([995.0, 1000.0], [2.0, 3.0])
    assert set(found["lag"]) == {"events", "serving: speed job"}
    assert "p99 /v1/events" in found["latency"]
    source.series()
    assert len(asked) == len(QUERIES)  # cached


def test_an_unreachable_prometheus_is_a_note_not_an_error():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    found, notes = PrometheusSource("http://nowhere:9090", transport=httpx.MockTransport(refuse)).series()
    assert found == {} and "did not answer" in notes[0]


# -- the response --------------------------------------------------------------------


def test_every_chart_is_listed_in_order_with_all_first():
    listed = charts({"errors": {"5xx /x": ([1.0], [2.0]), "all": ([1.0], [2.0]), "4xx /x": ([1.0], [0.0])}})
    assert [c.id for c in listed] == [spec.id for spec in CHARTS]
    assert [s.name for s in listed[[c.id for c in listed].index("errors")].series] == ["all", "4xx /x", "5xx /x"]
    assert next(c for c in listed if c.id == "freshness").threshold == 5.0


def test_models_show_each_versions_newest_status_and_its_gate_metric():
    now = datetime.now(UTC)
    rows = [
        (1, "candidate", 3, {"model_ndcg_at_10": 0.3, "popularity_ndcg_at_10": 0.1}),
        (1, "published", 2.9, None),
        (2, "rejected", 1, {"model_ndcg_at_10": 0.25, "popularity_ndcg_at_10": 0.1}),
        (3, "training", 0, None),
    ]
    registry = pa.Table.from_pylist(
        [{"model_version": v, "status": s, "recorded_at": now - timedelta(hours=ago),
          "metrics": None if m is None else json.dumps(m)} for v, s, ago, m in rows], schema=MODELS.schema)
    found = models(registry, "ndcg_at_10", serving_version=1)
    assert [(v.model_version, v.status, v.metric, v.baseline, v.serving) for v in found.versions] == [
        (1, "published", 0.3, 0.1, True), (2, "rejected", 0.25, 0.1, False), (3, "training", None, None, False)]
    assert found.versions[0].recorded_at == pytest.approx((now - timedelta(hours=2.9)).timestamp())


def test_registry_samples_read_an_in_process_registry_as_the_text_parser_does():
    registry = CollectorRegistry()
    metrics = Metrics()
    metrics.events.labels("accepted").inc(3)
    assert registry_samples(metrics.registry) == samples(generate_latest(metrics.registry).decode())
    assert registry_samples(registry) == {}


# -- the page ------------------------------------------------------------------------


def test_the_page_and_every_asset_it_loads_are_served(settings):
    """What a browser fetches first: the page, then each asset it names (installed files, found from the package)."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.dashboard.routes import ASSETS

    client = TestClient(create_app(settings))
    page = client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "<html" in page.text
    for name in ASSETS:
        assert f"dashboard/assets/{name}" in page.text, name
        asset = client.get(f"/dashboard/assets/{name}")
        assert asset.status_code == 200 and len(asset.content) > 100, name
