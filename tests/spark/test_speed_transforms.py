"""Speed-layer transforms on static DataFrames: validation reasons, consent, row shapes."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from speed.transforms import (
    LATE,
    consented,
    late_reason,
    parse_records,
    realtime_interactions,
    to_dead_letters,
    to_events,
    to_user_interactions,
)
from tests.support.speed import BAD, NOW, POISON, message, message_body

pytestmark = pytest.mark.spark


def records(spark, values: list[bytes | None], kafka_ts=NOW):
    rows = [(None, v, "events", 0, offset, kafka_ts.replace(tzinfo=None)) for offset, v in enumerate(values)]
    return spark.createDataFrame(
        rows, "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
    )


def test_every_bad_record_gets_its_reason_and_good_ones_pass(spark, settings):
    oversize = message(item_id="x" * 100, context={"note": "y" * settings.speed_max_record_bytes})
    values = [message(), *BAD, oversize, message(event_type="rating", value=4.0)]
    parsed = consented(parse_records(records(spark, values), settings))

    dead = {row.kafka_offset: row for row in to_dead_letters(parsed).collect()}
    expected = {offset: reason for offset, reason in enumerate([None, *BAD.values(), "oversize", None]) if reason}
    assert {offset: row.reason for offset, row in dead.items()} == expected
    assert dead[1].raw == b"{not json"
    assert all(row.kafka_topic == "events" and row.kafka_partition == 0 for row in dead.values())

    events = to_events(parsed).collect()
    assert [row.kafka_offset for row in events] == [0, len(values) - 1]
    first = events[0]
    assert (first.device, first.country) == ("ios", "DE")
    assert first.context == {"campaign": "x"}
    assert first.event_date == NOW.date()


def test_a_raw_user_id_is_dead_lettered_with_the_id_redacted(spark, settings):
    """Written straight to Kafka, past the API's pseudonymisation: the raw id is kept nowhere."""
    spaced = json.dumps(message_body(user_id="alice@example.com"), indent=2).encode()  # '"user_id": "..."'
    escaped = message(user_id='bob "the" builder')  # JSON escapes the quotes: re-serialised instead
    invalid_too = message(user_id="1", event_type="teleport")  # another reason wins; the id still goes
    parsed = parse_records(records(spark, [spaced, escaped, invalid_too, message()]), settings)
    dead = {row.kafka_offset: row for row in to_dead_letters(parsed).collect()}
    assert {k: row.reason for k, row in dead.items()} == {0: "raw_user_id", 1: "raw_user_id",
                                                          2: "unknown_event_type:teleport"}
    assert dead[0].raw == spaced.replace(b'"user_id": "alice@example.com"', b'"user_id":"[redacted]"')
    for row in dead.values():
        body = json.loads(row.raw)
        assert body["user_id"] == "[redacted]" and body["item_id"] == "item-1", body
    assert b"alice" not in dead[0].raw and b"builder" not in dead[1].raw
    assert [row.kafka_offset for row in to_events(parsed).collect()] == [3]


def test_events_without_consent_reach_no_table(spark, settings):
    values = [message(context={"consent": False}), message(context={"consent": True}), message()]
    parsed = consented(parse_records(records(spark, values), settings))
    assert [row.kafka_offset for row in to_events(parsed).collect()] == [1, 2]
    assert to_dead_letters(parsed).count() == 0


def test_interaction_weights_follow_settings(spark, settings):
    values = [message(event_type="view"), message(event_type="purchase"), message(event_type="rating", value=3.0)]
    events = to_events(parse_records(records(spark, values), settings))
    weights = [row.weight for row in to_user_interactions(events, settings).orderBy("occurred_at", "event_type").collect()]
    w = settings.event_weights
    assert sorted(weights) == sorted([w["view"], w["purchase"], w["rating"] * 3.0])


def test_only_valid_records_before_the_cutoff_become_late(spark):
    from pyspark.sql import functions as F

    rows = spark.createDataFrame([(None, 999), (None, 1000), (None, 1001), ("malformed_json", 5)],
                                 "reason string, us long").withColumn("ingest_ts", F.timestamp_micros("us"))
    assert [r[0] for r in rows.select(late_reason(1000)).collect()] == [LATE, None, None, "malformed_json"]
    assert [r[0] for r in rows.select(late_reason(None)).collect()] == [None, None, None, "malformed_json"]


def test_poison_records_are_dead_lettered_with_their_reason_and_the_records_around_them_pass(spark, settings):
    """Issue 31's poison written straight to the topic: each dead-lettered with its reason, none an
    event or an interaction, so neither the events query nor the real-time query forwards any."""
    good = [message(), message(event_type="rating", value=4.0), message(value=1e6)]
    values = [good[0], *POISON, *good[1:]]
    parsed = consented(parse_records(records(spark, values), settings))

    dead = {row.kafka_offset: row.reason for row in to_dead_letters(parsed).collect()}
    assert dead == {offset + 1: reason for offset, reason in enumerate(POISON.values())}
    kept = [row.kafka_offset for row in to_events(parsed).collect()]
    assert kept == [0, len(values) - 2, len(values) - 1]
    forwarded = [row.event_id for row in realtime_interactions(parsed, settings).collect()]
    assert sorted(forwarded) == sorted(json.loads(g)["event_id"] for g in good)


def test_a_records_own_kafka_timestamp_cannot_move_the_time_window(spark, settings):
    """A producer past the API chooses its records' timestamps: the window is held between the oldest
    time the topic can hold and the speed job's clock."""
    ancient = message(occurred_at="1971-01-01T00:00:00+00:00")
    ahead = message(occurred_at=(NOW + dt.timedelta(days=30)).isoformat())
    back = parse_records(records(spark, [ancient], kafka_ts=dt.datetime(1971, 1, 1, tzinfo=dt.UTC)), settings)
    forward = parse_records(records(spark, [ahead], kafka_ts=NOW + dt.timedelta(days=30)), settings)
    assert [row.reason for row in to_dead_letters(back).collect()] == ["occurred_at_too_old"]
    assert [row.reason for row in to_dead_letters(forward).collect()] == ["occurred_at_in_future"]


def test_the_features_query_leaves_out_values_landed_before_the_bound(spark, settings):
    """``events`` rows from before the value rule (the issue's 1.7e308 purchase) weigh nothing in the
    features: every weight the features query folds is finite."""
    old = settings.model_copy(update={"event_value_max": 1.79e308, "topic_retention_ms": -1})
    events = to_events(parse_records(records(spark, [message(value=1.7e308), message(value=2.0)]), old))
    assert events.count() == 2  # both landed under the old, looser bound
    weights = [row.weight for row in to_user_interactions(events, settings).collect()]
    assert weights == [settings.event_weights["purchase"] * 2.0]
