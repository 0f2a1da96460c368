"""foreachBatch sinks of the micro-batch queries: exactly-once Delta commits, then speed-updates.

Every Delta append goes through delta-spark with Delta's app transaction
(``txnAppId`` ``speed-<query id>``, ``txnVersion`` the batch id): a table that has
recorded the transaction skips the write, so a batch replayed after a crash —
even between the Delta commits and Spark's commit log — writes nothing twice.
Only after the commits does the batch go to serving on ``speed-updates``; a
replay sends the same messages again, which serving recognises.

Each batch is persisted while its tables are written, so the source and the
dedupe state are read once per batch, not once per table.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lambdarec.erasure_rows import ReadyErasures
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import (
    DEAD_LETTER,
    EVENTS,
    SPEED_ITEM_TRENDING,
    SPEED_USER_FEATURES,
    SPEED_USER_INTERACTIONS,
    USER_CONSENT,
    TableSpec,
)
from schemas.speed_updates import KIND_ITEM_TRENDING, KIND_USER_FEATURES, MAP_FIELDS, encode_rows, unencodable_field
from lambdarec.checkpoint_files import CheckpointFiles
from speed.consent import ConsentState
from speed.metrics import METRICS
from speed.transforms import CONTEXT_COLUMNS, LATE, interaction_messages, interval_seconds, late_reason

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger("lambdarec.speed")
FRONTIERS_KEPT = 20
FRONTIER_DIR = "lambdarec_frontier"
PUSH_ROWS = 1000  # rows per speed-updates message: about 300 KB, well under Kafka's 1 MB default


class Sink:
    """What both sinks share: the query id, the lake, and the speed-updates producer."""

    def __init__(self, settings: Settings, checkpoint: str):
        self.settings = settings
        self.lake = Lake(settings)
        self.checkpoint = checkpoint
        self._files: CheckpointFiles | None = None
        self._query_id: str | None = None
        self._producer = None
        self.erasures = ReadyErasures(self.lake, self.erased_tables)

    erased_tables: tuple[TableSpec, ...] = ()

    def files(self, batch: "DataFrame") -> CheckpointFiles:
        if self._files is None:
            self._files = CheckpointFiles(batch.sparkSession, self.checkpoint)
        return self._files

    def query_id(self) -> str:
        if self._query_id is None:
            if self._files is None:
                raise RuntimeError("the query id is read from the checkpoint once a batch has arrived")
            self._query_id = self._files.query_id()
        return self._query_id

    def app_id(self) -> str:
        return f"speed-{self.query_id()}"

    def commit(self, spec: TableSpec, rows: "DataFrame", batch_id: int) -> int | None:
        """Append ``rows`` keyed (this query, ``batch_id``); the table version that carries them."""
        version = self.lake.append_spark(spec, rows, self.app_id(), batch_id)
        return version if version is not None else self.lake.commit_version(spec, self.app_id(), batch_id)

    def stamped(self, rows: "DataFrame", batch_id: int) -> "DataFrame":
        from pyspark.sql import functions as F

        return rows.withColumn("query_id", F.lit(self.query_id())).withColumn("batch_id", F.lit(batch_id).cast("long"))

    def send(self, messages: "DataFrame") -> None:
        """Write (key, value) rows to speed-updates through Spark's Kafka sink (idempotent, acks=all)."""
        (messages.write.format("kafka")
         .option("kafka.bootstrap.servers", self.settings.bootstrap_servers)
         .option("kafka.acks", "all")
         .option("kafka.enable.idempotence", "true")
         .option("topic", self.settings.topic_speed_updates)
         .save())

    def push(self, kind: str, batch_id: int, rows: list[dict[str, Any]]) -> None:
        """A batch's rows as speed-updates messages (``schemas.speed_updates.encode_rows``) of at most
        ``PUSH_ROWS`` rows each, keyed by chunk number, so a replayed batch sends the same messages
        and no message nears Kafka's size limit."""
        from lambdarec.kafka_io import make_producer, send_all

        if self._producer is None:
            self._producer = make_producer(self.settings)
        query_id = self.query_id()
        messages = [(str(n).encode(), encode_rows(kind, query_id, batch_id, rows[start:start + PUSH_ROWS]))
                    for n, start in enumerate(range(0, len(rows), PUSH_ROWS))]
        send_all(self._producer, self.settings.topic_speed_updates, messages)


class EventsSink(Sink):
    """Events query: ``events``, ``dead_letter`` (bad and late records), ``speed_user_interactions``.

    Before its appends, a batch deletes the rows of erasures that are ready from these
    tables (``lambdarec.erasure_rows``): the erasure job's own delete would race its appends.

    Late means the record's Kafka timestamp is older than the dedupe window
    behind the newest timestamp of earlier batches: its duplicates may no longer
    be in the dedupe state, so it is dead-lettered (raw bytes kept, for a replay)
    rather than risk a duplicate or be dropped. That frontier is stored per batch
    beside the checkpoint, so a replayed batch is classified exactly as before.
    """

    erased_tables = (EVENTS, DEAD_LETTER, SPEED_USER_INTERACTIONS, USER_CONSENT)

    def __init__(self, settings: Settings, checkpoint: str):
        super().__init__(settings, checkpoint)
        self.consent = ConsentState(settings, self.lake)

    def __call__(self, batch: "DataFrame", batch_id: int) -> None:
        from pyspark.sql import functions as F

        started = time.perf_counter()
        files = self.files(batch)
        self.erasures.apply(batch.sparkSession)
        changes = len(self.consent.refresh(files))  # never behind the committed consent offsets
        frontier = self._frontier_before(files, batch_id)
        cutoff_us = None if frontier is None else frontier - self._window_us()
        rows = self.consent.withdrawn_flag(batch.withColumn("reason", late_reason(cutoff_us)),
                                           F.col("event_row.user_id"), F.col("ingest_ts")).persist()
        kept = ~F.col("withdrawn")
        try:
            first = rows.agg(
                F.count(F.when(kept & F.col("reason").isNull(), 1)).alias("events"),
                F.count(F.when(kept & F.col("reason").isNotNull(), 1)).alias("dead_letters"),
                F.count(F.when(kept & (F.col("reason") == LATE), 1)).alias("late"),
                F.count(F.when(F.col("withdrawn"), 1)).alias("withdrawn"),
                F.unix_micros(F.max("ingest_ts")).alias("newest"),
            ).first()
            assert first is not None  # an aggregate has one row
            summary: dict[str, Any] = {**first.asDict(), "consent_changes": changes}
            timings = {"read_ms": _ms_since(started)}
            self._write(rows.filter(kept), batch_id, summary, timings)
        finally:
            rows.unpersist()
        self._save_frontier(files, batch_id, max(x for x in (frontier, summary["newest"], -1) if x is not None))
        log.info(json.dumps({"event": "batch", "query": "events", "batch_id": batch_id,
                             **{k: v for k, v in summary.items() if k != "newest"}, **timings}))

    def _write(self, rows: "DataFrame", batch_id: int, summary: dict[str, Any], timings: dict[str, Any]) -> None:
        from pyspark.sql import functions as F

        if summary["late"]:
            log.warning(json.dumps({"event": "late_events", "batch_id": batch_id, "late": summary["late"]}))
        if summary["dead_letters"]:
            started = time.perf_counter()
            dead = rows.filter(F.col("reason").isNotNull()).select(
                F.col("dead_row").withField("reason", F.col("reason")).alias("d")).select("d.*")
            self.commit(DEAD_LETTER, dead, batch_id)
            METRICS.count_dead_letters({r["reason"]: r["count"] for r in dead.groupBy("reason").count().collect()})
            timings["dead_letter_ms"] = _ms_since(started)
        if not summary["events"]:
            return
        started = time.perf_counter()
        valid = rows.filter(F.col("reason").isNull())
        events_version = self.commit(EVENTS, valid.select("event_row.*"), batch_id)
        METRICS.landed.labels(EVENTS.name).inc(summary["events"])
        timings["events_ms"] = _ms_since(started)
        interactions = valid.filter(F.col("weight").isNotNull()).select(
            *[F.col(f"event_row.{name}").alias(name) for name in ("user_id", "item_id", "event_type")],
            "weight",
            *[F.col(f"event_row.{name}").alias(name)
              for name in ("occurred_at", "event_id", *CONTEXT_COLUMNS, "received_at")],
        )
        version = F.lit(events_version).cast("long")
        started = time.perf_counter()
        self.commit(SPEED_USER_INTERACTIONS, self.stamped(interactions.withColumn("events_version", version), batch_id),
                    batch_id)
        timings["interactions_ms"] = _ms_since(started)
        started = time.perf_counter()
        self.send(interaction_messages(interactions, version))
        timings.update(push_ms=_ms_since(started), events_version=events_version)

    def _window_us(self) -> int:
        return int(interval_seconds(self.settings.speed_dedupe_window) * 1_000_000)

    @staticmethod
    def _frontier_before(files: CheckpointFiles, batch_id: int) -> int | None:
        """Newest Kafka timestamp (µs) of the batches before ``batch_id``, None before the first."""
        earlier = [int(name) for name in files.list(FRONTIER_DIR) if name.isdigit() and int(name) < batch_id]
        if not earlier:
            return None
        text = files.read(f"{FRONTIER_DIR}/{max(earlier)}")
        if text is None:
            return None
        value = int(text)
        return value if value >= 0 else None

    @staticmethod
    def _save_frontier(files: CheckpointFiles, batch_id: int, value: int) -> None:
        files.write(f"{FRONTIER_DIR}/{batch_id}", str(value))
        for name in files.list(FRONTIER_DIR):
            if name.isdigit() and int(name) < batch_id - FRONTIERS_KEPT:
                files.delete(f"{FRONTIER_DIR}/{name}")


class FeaturesSink(Sink):
    """Features query: ``speed_user_features`` and ``speed_item_trending`` changelogs, then pushes;
    first, erased users' rows of ``speed_user_features`` go, as in ``EventsSink``."""

    erased_tables = (SPEED_USER_FEATURES,)

    def __call__(self, batch: "DataFrame", batch_id: int) -> None:
        from pyspark.sql import functions as F

        self.files(batch)
        self.erasures.apply(batch.sparkSession)
        rows = batch.persist()
        try:
            users = self.stamped(user_rows(rows.filter(F.col("kind") == "user")), batch_id)
            items = self.stamped(item_rows(rows.filter(F.col("kind") == "item")), batch_id)
            counts = {}
            for spec, table, kind in ((SPEED_USER_FEATURES, users, KIND_USER_FEATURES),
                                      (SPEED_ITEM_TRENDING, items, KIND_ITEM_TRENDING)):
                arrow = table.toArrow()
                made = arrow.to_pylist()
                kept = [row for row in made if unencodable_field(row) is None]
                if len(kept) < len(made):  # never committed, so never loaded or pushed, never retried
                    METRICS.dropped_rows.labels(spec.name).inc(len(made) - len(kept))
                    log.warning(json.dumps({"event": "unencodable_rows_dropped", "query": "features",
                                            "batch_id": batch_id, "table": spec.name, "rows": len(made) - len(kept)}))
                    table = batch.sparkSession.createDataFrame(pa.Table.from_pylist(kept, schema=arrow.schema))
                counts[spec.name] = len(kept)
                if not kept:
                    continue
                self.commit(spec, table, batch_id)
                METRICS.landed.labels(spec.name).inc(len(kept))
                self.push(kind, batch_id, kept)
        finally:
            rows.unpersist()
        log.info(json.dumps({"event": "batch", "query": "features", "batch_id": batch_id, **counts}))


def user_rows(rows: "DataFrame") -> "DataFrame":
    """``speed_user_features`` columns from the features processor's output."""
    from pyspark.sql import functions as F

    counts = "map<string,bigint>"  # the processor writes counts as JSON objects
    return rows.select(
        "user_id",
        F.timestamp_micros("last_seen").alias("last_seen"),
        "session_id",
        F.timestamp_micros("session_start").alias("session_start"),
        "session_events",
        *(F.from_json(name, counts).alias(name) for name in MAP_FIELDS),
        "country",
        "device",
    )


def item_rows(rows: "DataFrame") -> "DataFrame":
    """``speed_item_trending`` columns from the features processor's output: one row per
    (segment, item, minute), the window being that minute."""
    from pyspark.sql import functions as F

    return rows.select(
        "segment_type", "segment",
        F.timestamp_micros("window_start").alias("window_start"),
        F.timestamp_micros("window_end").alias("window_end"),
        "item_id", "events", "weight",
    )


def _ms_since(started: float) -> int:
    return round(1000 * (time.perf_counter() - started))
