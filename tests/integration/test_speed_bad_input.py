"""Bad input against the running events query: every bad record dead-lettered with its reason,
every good one in ``events``, late records recorded, and the query still running."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from lambdarec.kafka_io import make_producer
from lambdarec.lake import Lake
from schemas.events import PSEUDONYM_PATTERN, REDACTED_USER_ID
from schemas.tables import DEAD_LETTER, EVENTS
from speed.job import run
from speed.transforms import LATE
from tests.support.speed import BAD, message, produce

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
