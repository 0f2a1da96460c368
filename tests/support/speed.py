"""Test helpers for the speed layer: event messages as producers send them, and a speed job run on a broker."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from kafka import TopicPartition

from lambdarec.kafka_io import make_consumer, make_producer, partition_end_offsets, send_all
from lambdarec.pseudonym import DEVELOPMENT_KEY, pseudonymise

NOW = dt.datetime.now(dt.timezone.utc)


def pid(name: str) -> str:
    """The pseudonym the API gives user ``name`` under the development key (speed records carry pseudonyms)."""
    return pseudonymise(name, DEVELOPMENT_KEY)


def message_body(**overrides) -> dict:
    """One valid ``events`` record (the event v1 fields as serving produces them), with ``overrides``."""
    body = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "user_id": pid("abc"),
        "item_id": "item-1",
        "event_type": "purchase",
        "value": None,
        "occurred_at": NOW.isoformat(),
        "received_at": NOW.isoformat(),
        "context": {"device": "ios", "country": "DE", "consent": True, "campaign": "x"},
    }
    body.update(overrides)
    return body


def message(**overrides) -> bytes:
    """``message_body`` as the bytes of a Kafka record."""
    return json.dumps(message_body(**overrides)).encode()


# Bad records and the dead-letter reason the speed layer gives each.
BAD = {
    b"{not json": "malformed_json",
    message(event_id="not-a-uuid"): "invalid_field:event_id",
    message(event_type="teleport"): "unknown_event_type:teleport",
    message(occurred_at="2026-11-26T10:00:00"): "invalid_field:occurred_at",
    message(occurred_at=(NOW + dt.timedelta(hours=2)).isoformat()): "occurred_at_in_future",
    message(user_id=""): "invalid_field:user_id",
    message(user_id="alice@example.com"): "raw_user_id",
    message(item_id=None): "missing_field:item_id",
    message(schema_version=2): "unsupported_schema_version:2",
    message(context={"country": "germany"}): "invalid_field:context.country",
}


# Issue 31's poison, written straight to the topic past the API (which refuses each with a 422), and the
# dead-letter reason the speed layer gives each: none may stop a query or reach a table or serving.
POISON = {
    message(value=1.7e308): "invalid_field:value",
    message(value=-1.7e308): "invalid_field:value",
    message(value=1.0).replace(b'"value": 1.0', b'"value": 1e999'): "invalid_field:value",  # read as infinity
    message(value=float("nan")): "malformed_json",  # Python's json writes NaN, which JSON does not have
    message(item_id="item\x00"): "invalid_field:item_id",
    message(item_id="\x1b[2J\x1b[31mred"): "invalid_field:item_id",
    message(item_id="cafe\u0301"): "invalid_field:item_id",  # not NFC
    message(occurred_at="0001-01-01T00:00:00+00:00"): "occurred_at_too_old",
    message(occurred_at=(NOW - dt.timedelta(days=3)).isoformat()): "occurred_at_too_old",  # past the retention
    message(occurred_at="9999-12-31T23:59:59+00:00"): "occurred_at_in_future",
    message(context={"campaign": "spring\u202e"}): "invalid_field:context",
    message(context={"note\x00": "x"}): "invalid_field:context",
}


def produce(settings, values: list[bytes]) -> None:
    """Send ``values`` to the events topic, unkeyed, and wait for every acknowledgement."""
    producer = make_producer(settings)
    try:
        send_all(producer, settings.topic_events, [(None, v) for v in values])
    finally:
        producer.close(timeout=5)


def run_to_end(spark, settings, start=None) -> None:
    """Run one speed query (the events query unless ``start`` is another's start) over what is on its
    source now, then stop, its last batch's progress recorded."""
    from speed import job, progress

    query = (start or job.run)(spark, settings, available_now=True)
    query.awaitTermination(180)
    assert query.exception() is None
    assert not query.isActive
    progress.wait_recorded(spark, query)


def speed_updates(settings) -> list[dict]:
    """Every message on the speed-updates topic so far, decoded."""
    consumer = make_consumer(settings.bootstrap_servers)
    try:
        partitions = [TopicPartition(settings.topic_speed_updates, p)
                      for p in consumer.partitions_for_topic(settings.topic_speed_updates)]
        ends = partition_end_offsets(consumer, partitions)
        consumer.seek_to_beginning()
        out = []
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(json.loads(r.value) for r in records)
        return out
    finally:
        consumer.close()
