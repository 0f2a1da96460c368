"""Contract: the speed layer's Spark path and ``schemas.events.event_row`` make the same ``events`` rows.

The importer and the generator write ``events`` rows through ``event_row``; the speed
layer writes them with Spark expressions (``speed.transforms.to_events``). The same
messages through both must give identical rows: lifted context columns, the context
map, timestamps and the event date included.
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from schemas.events import consented, event_row
from schemas.tables import EVENTS
from speed.transforms import consented as spark_consented
from speed.transforms import parse_records, to_events

from tests.support.speed import message_body

pytestmark = pytest.mark.spark

KAFKA_TS = dt.datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=dt.UTC)


def _message(**overrides) -> dict:
    return message_body(**{"occurred_at": "2026-03-01T10:00:00+00:00", "received_at": "2026-03-01T10:00:01.5+00:00",
                            **overrides})


MESSAGES = [
    _message(),
    _message(event_type="rating", value=4.5, context={"campaign": "spring", "ref": "mail"}),
    # An offset that puts the UTC date on the day before; microseconds kept.
    _message(occurred_at="2026-03-01T01:30:00.123456+02:00", received_at="2026-03-01T01:30:02Z"),
    # No received_at: the Kafka record's timestamp stands in.
    {k: v for k, v in _message(context={"device": "android"}).items() if k != "received_at"},
    # No context at all, and consent given without device or country.
    {k: v for k, v in _message().items() if k != "context"},
    _message(context={"consent": "TRUE", "note": ""}),
    # Refused consent: no row on either path.
    _message(context={"consent": False, "device": "web"}),
    _message(context={"consent": "False"}),
]


def _records(spark, messages: list[dict]):
    from pyspark.sql import functions as F

    micros = int(KAFKA_TS.timestamp() * 1_000_000)
    rows = [(None, json.dumps(m).encode(), "events", 3, offset, micros) for offset, m in enumerate(messages)]
    frame = spark.createDataFrame(
        rows, "key binary, value binary, topic string, partition int, offset long, ts long"
    )
    return frame.withColumn("timestamp", F.timestamp_micros("ts")).drop("ts")


def _comparable(table: pa.Table) -> list[dict]:
    rows = table.cast(EVENTS.schema).to_pylist()
    for row in rows:
        row["context"] = dict(row["context"]) if row["context"] is not None else None
    return sorted(rows, key=lambda row: row["kafka_offset"])


def test_spark_and_python_paths_make_identical_events_rows(spark, settings):
    # Fixed dates, months old: topics that keep records forever bound no age (test_event_rules_contract.py
    # covers the time window).
    settings = settings.model_copy(update={"topic_retention_ms": -1})
    parsed = spark_consented(parse_records(_records(spark, MESSAGES), settings))
    spark_rows = _comparable(to_events(parsed).toArrow())

    python_rows = _comparable(
        pa.Table.from_pylist(
            [
                event_row(m, ingest_ts=KAFKA_TS, kafka_topic="events", kafka_partition=3, kafka_offset=offset)
                for offset, m in enumerate(MESSAGES)
                if consented(m.get("context"))
            ],
            schema=EVENTS.schema,
        )
    )

    assert [row["kafka_offset"] for row in spark_rows] == [0, 1, 2, 3, 4, 5]
    assert spark_rows == python_rows
    # What the contract pins, spelled out once.
    first, _, early, no_received, *_ = python_rows
    assert (first["device"], first["country"], first["context"]) == ("ios", "DE", {"campaign": "x"})
    assert early["event_date"] == dt.date(2026, 2, 28)
    assert early["occurred_at"] == dt.datetime(2026, 2, 28, 23, 30, 0, 123456, tzinfo=dt.UTC)
    assert no_received["received_at"] == KAFKA_TS
