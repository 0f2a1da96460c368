"""The events query's consent state: every user's personalisation changes, from the consent topic.

Before each micro-batch the sink reads the consent topic to its end (a plain
consumer in the driver: consent changes are few) and appends what it read to
``user_consent`` before any event of the batch is written. An event produced
after a withdrawal was acknowledged has a later Kafka timestamp and sits in this
batch or a later one, so the withdrawal is always known when that event is
judged: events of a user whose latest change at or before the event's Kafka
timestamp is a withdrawal are dropped, and reach no table.

The state is ``user_consent`` itself: after a restart it is rebuilt from the table,
and the topic is read on from the offsets the table holds or, if further, from
the events query's committed offsets of the consent topic (every change before
those was stored, and an erasure may have deleted it since: it must not come
back), so a change is stored once. A record that is not a valid change goes to
``dead_letter`` with the reason ``invalid_consent:<field>`` (once: a re-read skips
those already there).

With ``erasure_on_withdrawal`` a withdrawal's erasure request is recorded before
the withdrawal is stored: a crash between the two leaves the change unstored, so
it is read again and its request (keyed by the change) found recorded once.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lambdarec import consent, privacy
from lambdarec.checkpoint_files import CheckpointFiles
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.consent import PERSONALISATION, ConsentChange, parse_message
from schemas.events import PSEUDONYM_PATTERN, REDACTED_USER_ID
from schemas.tables import DEAD_LETTER, PRIVACY_REQUESTS, USER_CONSENT

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

log = logging.getLogger("lambdarec.speed")
READ_TIMEOUT_MS = 200
READ_DEADLINE_S = 30


class ConsentState:
    def __init__(self, settings: Settings, lake: Lake):
        self.settings = settings
        self.lake = lake
        self._changes: list[dict[str, Any]] | None = None  # user_consent rows, in effect order
        self._version: int | None = None  # the user_consent version they were read at
        self._positions: dict[int, int] = {}  # next offset to read, per partition

    def refresh(self, committed: CheckpointFiles | None = None) -> list[dict[str, Any]]:
        """Read the topic to its end and store what is new; the new changes. ``committed`` is the events
        query's checkpoint, whose committed consent offsets no re-read goes behind."""
        if self._changes is None or self.lake.version(USER_CONSENT) != self._version:
            self._reload()  # at start, or after an erasure deleted a user's rows
        if committed is not None:
            for partition, offset in self._committed(committed).items():
                self._positions[partition] = max(self._positions.get(partition, 0), offset)
        rows, dead = self._read()
        if dead:
            self._store_dead_letters(dead)
        if rows:
            self._erase_on_withdrawal(rows)  # first: see the module's docstring
            self.lake.ensure(USER_CONSENT)
            self.lake.append_arrow(USER_CONSENT, pa.Table.from_pylist(rows, schema=USER_CONSENT.schema))
            self._reload()
        return rows

    def _committed(self, files: CheckpointFiles) -> dict[int, int]:
        """The consent topic's offsets as of the events query's newest committed batch."""
        source = (files.committed_offsets() or [None])[0]
        offsets = source.get(self.settings.topic_consent, {}) if isinstance(source, dict) else {}
        return {int(partition): int(offset) for partition, offset in offsets.items()}

    def _reload(self) -> None:
        """Rebuild the state from ``user_consent``: the changes, and where to read the topic on from."""
        self._version = self.lake.version(USER_CONSENT)
        self._changes = consent.history(self.lake)
        self._positions = {}
        for row in self._changes:
            partition = row["kafka_partition"]
            self._positions[partition] = max(self._positions.get(partition, 0), row["kafka_offset"] + 1)

    def withdrawn_flag(self, rows: "DataFrame", user: "Column", at: "Column") -> "DataFrame":
        """``rows`` with a ``withdrawn`` column: the row's user had withdrawn consent at time ``at``."""
        from pyspark.sql import functions as F

        intervals = consent.withdrawn_intervals(self._changes or [])
        if not intervals:
            return rows.withColumn("withdrawn", F.lit(False))
        stretches = rows.sparkSession.createDataFrame(
            intervals, "withdrawn_user string, withdrawn_from timestamp, withdrawn_until timestamp")
        inside = ((user == F.col("withdrawn_user")) & (at >= F.col("withdrawn_from"))
                  & (F.col("withdrawn_until").isNull() | (at < F.col("withdrawn_until"))))
        return (rows.join(F.broadcast(stretches), inside, "left")
                .withColumn("withdrawn", F.col("withdrawn_user").isNotNull())
                .drop("withdrawn_user", "withdrawn_from", "withdrawn_until"))

    def _read(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Records from the stored positions to the topic's end now: (user_consent rows, dead-letter rows)."""
        from kafka import TopicPartition

        from lambdarec.kafka_io import make_consumer

        topic = self.settings.topic_consent
        consumer = make_consumer(self.settings.bootstrap_servers)
        rows: list[dict[str, Any]] = []
        dead: list[dict[str, Any]] = []
        try:
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not partitions:
                return rows, dead
            ends = consumer.end_offsets(partitions)
            starts = consumer.beginning_offsets(partitions)
            todo = {tp: ends[tp] for tp in partitions
                    if max(self._positions.get(tp.partition, 0), starts[tp]) < ends[tp]}
            consumer.assign(list(todo))
            for tp in todo:
                consumer.seek(tp, max(self._positions.get(tp.partition, 0), starts[tp]))
            seen = {row["change_id"] for row in self._changes or []}
            deadline = time.monotonic() + READ_DEADLINE_S
            while todo:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the consent topic was not read to its end in {READ_DEADLINE_S} s")
                for tp, records in consumer.poll(timeout_ms=READ_TIMEOUT_MS).items():
                    for record in records:
                        if record.offset >= todo.get(tp, -1):
                            continue
                        self._positions[tp.partition] = record.offset + 1
                        at = datetime.fromtimestamp(record.timestamp / 1000, UTC)
                        change = parse_message(record.value)
                        if isinstance(change, ConsentChange):
                            if change.change_id not in seen:
                                seen.add(change.change_id)
                                rows.append(change.to_row(tp.partition, record.offset, at))
                        else:
                            dead.append({"raw": _redacted(record.value or b""), "reason": change, "kafka_topic": topic,
                                         "kafka_partition": tp.partition, "kafka_offset": record.offset,
                                         "recorded_at": datetime.now(UTC)})
                for tp in [tp for tp, end in todo.items() if consumer.position(tp) >= end]:
                    todo.pop(tp)
                    consumer.pause(tp)
        finally:
            consumer.close()
        return rows, dead

    def _store_dead_letters(self, dead: list[dict[str, Any]]) -> None:
        """Append bad consent records to ``dead_letter``, but for those a run before this one stored."""
        topic = self.settings.topic_consent
        stored = self.lake.read_arrow(DEAD_LETTER, filter=(pc.field("kafka_topic") == topic)
                                      & (pc.field("kafka_offset") >= min(r["kafka_offset"] for r in dead)))
        have = set(zip(stored.column("kafka_partition").to_pylist(), stored.column("kafka_offset").to_pylist(),
                       strict=True))
        new = [r for r in dead if (r["kafka_partition"], r["kafka_offset"]) not in have]
        if new:
            self.lake.ensure(DEAD_LETTER)
            self.lake.append_arrow(DEAD_LETTER, pa.Table.from_pylist(new, schema=DEAD_LETTER.schema))
            log.warning(json.dumps({"event": "invalid_consent", "records": len(new)}))

    def _erase_on_withdrawal(self, rows: list[dict[str, Any]]) -> None:
        """With ``erasure_on_withdrawal``, a withdrawal of personalisation records an erasure of the user."""
        if not self.settings.erasure_on_withdrawal:
            return
        withdrawals = [r for r in rows if r["purpose"] == PERSONALISATION and not r["granted"]]
        if withdrawals:
            self.lake.ensure(PRIVACY_REQUESTS)
            ends = privacy.events_end_offsets(self.settings)
            for row in withdrawals:
                privacy.record_erasure(self.lake, row["user_id"], consent.erasure_request_id(row["change_id"]),
                                       "consent", ends)


def _redacted(raw: bytes) -> bytes:
    """A bad record's bytes for ``dead_letter``, a raw (not pseudonymous) ``user_id`` in it redacted."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw
    user = body.get("user_id") if isinstance(body, dict) else None
    if not isinstance(user, str) or re.match(PSEUDONYM_PATTERN, user):
        return raw
    return json.dumps({**body, "user_id": REDACTED_USER_ID}).encode()
