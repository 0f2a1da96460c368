"""The speed → serving contract end to end: the speed layer's real output, read off
``speed-updates`` as bytes, applied to serving's ``SpeedView``, queried over HTTP.

Events go through the events query and the features query (Spark, a real broker,
Delta); every record the speed layer put on ``speed-updates`` is applied, as the
serving follower applies it, to the speed view of an app; ``/v1/trending`` then
answers globally, per country and per device over one sliding window.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict

import pytest
from fastapi.testclient import TestClient
from kafka import TopicPartition

from lambdarec.kafka_io import make_consumer, partition_end_offsets
from schemas.speed_updates import GLOBAL_SEGMENT, timestamp
from serving.app import create_app
from speed.job import run_features
from speed.recompute import recompute
from tests.support.speed import message, pid, produce, run_to_end

pytestmark = [pytest.mark.integration, pytest.mark.spark]

T0 = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=2)


def at(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).isoformat()


def event(item: str, minutes: float, country: str | None, device: str | None, n: int, event_type: str = "view"):
    context = {name: value for name, value in (("country", country), ("device", device)) if value}
    return message(user_id=pid(f"u{n % 7}"), item_id=item, event_type=event_type, occurred_at=at(minutes), context=context)


def records(settings) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) on speed-updates, as the serving follower receives them."""
    consumer = make_consumer(settings.bootstrap_servers)
    try:
        partitions = [TopicPartition(settings.topic_speed_updates, p)
                      for p in consumer.partitions_for_topic(settings.topic_speed_updates)]
        ends = partition_end_offsets(consumer, partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        out = []
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend((r.key, r.value) for r in batch)
        return out
    finally:
        consumer.close()


def run_speed(spark, settings, events: list[bytes]) -> None:
    produce(settings, events)
    run_to_end(spark, settings)
    run_to_end(spark, settings, run_features)


def test_trending_served_from_the_speed_layers_output(spark, broker_settings):
    settings = broker_settings
    # Wave 1: an item busy all through the hour, and one that was busy before it.
    stale = [event("stale", -90 + n % 10, "DE", "ios", n) for n in range(60)]
    busy = [event("busy", 10 + n % 40, "DE", "ios", n) for n in range(200)]
    run_speed(spark, settings, stale + busy)
    # Wave 2, a later features batch: single events in the hour's last minutes.
    fresh = [event("fresh", 59, "FR", "web", 0, "purchase")]
    android = [event("droid", 58, "US", "android", n) for n in range(3)]
    no_context = [event("plain", 57, None, None, 0)]
    run_speed(spark, settings, fresh + android + no_context)

    app = create_app(settings)  # no lifespan: the test applies the topic itself, as the follower would
    view = app.state.services.speed_view
    kinds = defaultdict(int)
    for key, value in records(settings):
        view.apply(value, key)  # raw bytes through the contract's decoder: a BadUpdate fails the test
        kinds[json.loads(value)["kind"]] += 1
    # (progress messages come from a listener on Spark's event bus, after the batch: not awaited here)
    assert {"interaction", "user_features", "item_trending"} <= set(kinds)
    assert view.bad_records == 0

    client = TestClient(app, raise_server_exceptions=True)

    def trending(**params):
        body = client.get("/v1/trending", params={"k": 10, **params}).json()
        return body["strategy"], body["segment"], {i["item_id"]: i["score"] for i in body["items"]}, \
            body["window_start"]

    window_start = timestamp(T0)  # the hour ending after minute 59, the newest event's
    weights = settings.event_weights
    strategy, segment, scores, start = trending()
    assert (strategy, segment, start) == ("trending_global", None, window_start)
    assert list(scores) == ["busy", "fresh", "droid", "plain"]  # 200 views beat a purchase in the last minute
    assert scores == pytest.approx({"busy": 200 * weights["view"], "fresh": weights["purchase"],
                                    "droid": 3 * weights["view"], "plain": weights["view"]})
    assert "stale" not in scores  # busy 90 minutes ago: outside the window
    assert trending(country="DE")[:3] == ("trending_segment", "country:DE", {"busy": 200 * weights["view"]})
    assert trending(country="FR")[:3] == ("trending_segment", "country:FR", {"fresh": weights["purchase"]})
    assert trending(device="ios")[:3] == ("trending_segment", "device:ios", {"busy": 200 * weights["view"]})
    assert trending(device="web")[:3] == ("trending_segment", "device:web", {"fresh": weights["purchase"]})
    assert trending(device="android")[1:] == ("device:android", {"droid": 3 * weights["view"]}, window_start)
    assert trending(country="US", device="web")[1] == "country:US"  # country first
    assert trending(device="tv")[:2] == ("trending_global", None)  # a segment with nothing: global

    # What serving ranks is the batch recomputation's minutes summed over the same window.
    _, items = recompute(spark, settings)
    start_us = round(T0.timestamp() * 1_000_000)
    expected: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (segment_type, segment_value, item, minute), row in items.items():
        if minute >= start_us:
            expected[(segment_type, segment_value)][item] += row["weight"]
    assert trending()[2] == pytest.approx(dict(expected[GLOBAL_SEGMENT]))
    assert trending(device="android")[2] == pytest.approx(dict(expected[("device", "android")]))

    cold = client.get("/v1/users/someone-new/recommendations", params={"device": "android"}).json()
    assert (cold["strategy"], cold["segment"], [i["item_id"] for i in cold["items"]]) == (
        "trending_segment", "device:android", ["droid"])
