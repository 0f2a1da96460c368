"""Bad input against the running speed queries: every bad record dead-lettered with its reason,
every good one in ``events``, late records recorded, no poison forwarded or encoded, and the
queries still running."""

from __future__ import annotations

import json
import math
import re
import time
import uuid

import pytest

from lambdarec.kafka_io import make_producer
from lambdarec.lake import Lake
from schemas.events import PSEUDONYM_PATTERN, REDACTED_USER_ID
from schemas.tables import DEAD_LETTER, EVENTS, SPEED_ITEM_TRENDING
from speed.job import run, run_features, run_realtime
from speed.metrics import METRICS
from speed.sinks import FeaturesSink
from speed.stateful import OUTPUT_COLUMNS, OUTPUT_SCHEMA
from speed.transforms import LATE
from tests.support.speed import BAD, POISON, message, produce, speed_updates

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def wait_until(condition, what: str, query, timeout_s: float = 180.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert query.exception() is None, query.exception()
        value = condition()
        if value:
            return value
        query.awaitTermination(0.2)  # the query's own wait, not a sleep: returns early if it dies
    raise AssertionError(f"timed out waiting for {what}")


def _user(raw: bytes | None):
    """The ``user_id`` field of a record's JSON object, if it is one."""
    try:
        body = json.loads(raw or b"")
    except ValueError:
        return None
    return body.get("user_id") if isinstance(body, dict) else None


def test_bad_records_are_dead_lettered_and_the_query_keeps_running(spark, broker_settings):
    settings = broker_settings.model_copy(update={"speed_trigger_ms": 100})
    lake = Lake(settings)
    query = run(spark, settings)
    try:
        good = [message(event_id=str(uuid.uuid4())) for _ in range(5)]
        oversize = message(context={"note": "y" * settings.speed_max_record_bytes})
        no_consent = message(context={"consent": False})
        produce(settings, [good[0], *BAD, oversize, no_consent, good[1], good[1]])  # good[1] twice: deduped
        producer = make_producer(settings)
        producer.send(settings.topic_events, key=b"k", value=None).get(timeout=30)  # an empty record
        expected = {**BAD, oversize: "oversize", None: "empty_record"}
        wait_until(lambda: lake.read_arrow(EVENTS).num_rows == 2 and lake.read_arrow(DEAD_LETTER).num_rows
                   == len(expected), "the first wave", query)

        # A record whose Kafka timestamp is 20 minutes behind what was already processed is late:
        # past the 10-minute dedupe window, so it is dead-lettered with its bytes, never dropped.
        late = message()
        old = int((time.time() - 20 * 60) * 1000)
        producer.send(settings.topic_events, value=late, timestamp_ms=old).get(timeout=30)
        producer.close(timeout=5)
        produce(settings, good[2:])
        wait_until(lambda: lake.read_arrow(EVENTS).num_rows == 5, "the second wave", query)
        dead = wait_until(lambda: (t := lake.read_arrow(DEAD_LETTER)).num_rows == len(expected) + 1 and t,
                          "the late record", query)

        # Records with a raw (not pseudonymous) user id are kept with the id redacted; the rest byte for byte.
        raw_ids = {raw for raw in expected if isinstance(user := _user(raw), str) and not re.match(PSEUDONYM_PATTERN, user)}
        assert len(raw_ids) == 2  # alice@example.com, and an empty id
        rows = dead.to_pylist()
        redacted = [row for row in rows if _user(row["raw"]) == REDACTED_USER_ID]
        assert sorted(row["reason"] for row in redacted) == sorted(expected[raw] for raw in raw_ids)
        assert not any(b"alice" in (row["raw"] or b"") for row in rows)
        kept = {row["raw"]: row["reason"] for row in rows if row not in redacted}
        assert kept == {raw: reason for raw, reason in {**expected, late: LATE}.items() if raw not in raw_ids}
        assert all(row["kafka_topic"] == settings.topic_events and row["kafka_offset"] >= 0
                   for row in dead.to_pylist())
        events = lake.read_arrow(EVENTS)
        assert sorted(events.column("event_id").to_pylist()) == sorted(json.loads(g)["event_id"] for g in good)
        assert json.loads(no_consent)["event_id"] not in events.column("event_id").to_pylist()
        assert query.isActive and query.exception() is None
    finally:
        query.stop()


def test_poison_written_straight_to_the_topic_is_dead_lettered_and_the_stream_goes_on(spark, broker_settings):
    """Issue 31's reproduction, past the API: the poison among ordinary events. Each poison record is
    dead-lettered with its reason, the features query (which once died encoding an infinite trending
    row) keeps running with finite features, and the events sent afterwards land."""
    settings = broker_settings.model_copy(update={"speed_trigger_ms": 100, "speed_features_trigger_ms": 200})
    lake = Lake(settings)
    events_query, features_query = run(spark, settings), run_features(spark, settings)
    try:
        before = [message(event_id=str(uuid.uuid4()), item_id="hit") for _ in range(5)]
        produce(settings, [*before[:2], *POISON, *before[2:]])
        dead = wait_until(lambda: (t := lake.read_arrow(DEAD_LETTER)).num_rows == len(POISON) and t,
                          "the poison in dead_letter", events_query)
        assert sorted(dead.column("reason").to_pylist()) == sorted(POISON.values())
        assert {row["raw"]: row["reason"] for row in dead.to_pylist()} == POISON

        after = [message(event_id=str(uuid.uuid4()), item_id="hit") for _ in range(5)]
        produce(settings, after)
        landed = wait_until(lambda: (t := lake.read_arrow(EVENTS)).num_rows == 10 and t, "the events after", events_query)
        assert sorted(landed.column("event_id").to_pylist()) == sorted(json.loads(m)["event_id"] for m in before + after)
        trending = wait_until(lambda: (t := lake.read_arrow(SPEED_ITEM_TRENDING)).num_rows and t,
                              "trending from the features query", features_query)
        assert set(trending.column("item_id").to_pylist()) == {"hit"}
        assert all(math.isfinite(w) for w in trending.column("weight").to_pylist())
        assert events_query.isActive and features_query.isActive
        assert events_query.exception() is None and features_query.exception() is None
    finally:
        events_query.stop()
        features_query.stop()


def test_the_realtime_query_forwards_no_poison(spark, broker_settings):
    settings = broker_settings
    producer = make_producer(settings)
    markers = []
    try:  # each partition: the poison, then a marker; once a partition's marker is out, its poison was read
        for partition in range(settings.topic_partitions):
            for raw in POISON:
                producer.send(settings.topic_events, value=raw, partition=partition)
            markers.append(message(event_id=str(uuid.uuid4())))
            producer.send(settings.topic_events, value=markers[-1], partition=partition).get(timeout=30)
    finally:
        producer.close(timeout=5)
    query = run_realtime(spark, settings)
    try:
        expected = {json.loads(m)["event_id"] for m in markers}
        wait_until(lambda: {u["event_id"] for u in speed_updates(settings)} >= expected,
                   "the real-time query's markers", query)
    finally:
        query.stop()
    assert {u["event_id"] for u in speed_updates(settings)} == expected  # not one poison record forwarded


def test_a_features_row_speed_updates_cannot_carry_is_dropped_and_counted_not_retried(spark, broker_settings, tmp_path):
    """Defence in depth behind the value bound: were a trending row ever not finite, it is left out of
    both the Delta commit and the push, counted, and the batch's other rows go on, once."""
    settings = broker_settings
    checkpoint = tmp_path / "features-checkpoint"
    checkpoint.mkdir()
    (checkpoint / "metadata").write_text(json.dumps({"id": "features-query"}))  # as Spark writes it
    minute = 1_700_000_000_000_000 - 1_700_000_000_000_000 % 60_000_000
    item = {"kind": "item", "segment_type": "global", "segment": "*", "window_start": minute,
            "window_end": minute + 60_000_000, "events": 1}
    batch = spark.createDataFrame(
        [{column: value.get(column) for column in OUTPUT_COLUMNS}
         for value in ({**item, "item_id": "fine", "weight": 2.0}, {**item, "item_id": "broken", "weight": math.inf})],
        OUTPUT_SCHEMA)
    dropped = METRICS.dropped_rows.labels(SPEED_ITEM_TRENDING.name)
    before = dropped._value.get()

    sink = FeaturesSink(settings, str(checkpoint))
    sink(batch, 0)
    sink(batch, 0)  # a replay of the same batch commits nothing twice

    lake = Lake(settings)
    assert lake.read_arrow(SPEED_ITEM_TRENDING).column("item_id").to_pylist() == ["fine"]
    pushed = [row["item_id"] for u in speed_updates(settings) if u["kind"] == "item_trending" for row in u["rows"]]
    assert set(pushed) == {"fine"}
    assert dropped._value.get() == before + 2  # counted in each run of the batch
