"""foreachBatch sinks of the speed queries: exactly-once Delta commits, then a push to serving.

Every Delta append is keyed by the app transaction (``speed-<query id>``,
batch id), so a batch replayed after a crash — even between the Delta commit
and Spark's commit log — writes nothing twice. Only after the commits does the
batch go to serving on ``speed-updates``; a replay re-sends the same message,
which serving recognises by (kind, query_id, batch_id).

Micro-batches are bounded by ``maxOffsetsPerTrigger``, so their rows come to
the driver as Arrow and delta-rs commits them directly, sparing a Spark write
job per table per batch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lambdarec.lake import Appender, Lake
from lambdarec.settings import Settings
from schemas.tables import (
    DEAD_LETTER,
    EVENTS,
    SPEED_ITEM_TRENDING,
    SPEED_USER_FEATURES,
    SPEED_USER_INTERACTIONS,
    TableSpec,
)
from schemas.topics import (
    SPEED_UPDATE_KIND_ITEM_TRENDING,
    SPEED_UPDATE_KIND_USER_FEATURES,
    SPEED_UPDATE_KIND_USER_INTERACTIONS,
)
from speed.transforms import LATE, interval_seconds

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger("lambdarec.speed")
FRONTIERS_KEPT = 20
INTERACTION_COLUMNS = ["user_id", "item_id", "event_type", "weight", "occurred_at", "event_id", "country", "device"]


def query_id_of(checkpoint: str) -> str:
    """A query's id from its checkpoint: stable across restarts of the same query."""
    metadata = Path(checkpoint.removeprefix("file://")) / "metadata"
    return json.loads(metadata.read_text().splitlines()[0])["id"]


class Sink:
    """What both sinks share: the query id, the lake, and the speed-updates producer."""

    def __init__(self, settings: Settings, checkpoint: str):
        self.settings = settings
        self.lake = Lake(settings)
        self.checkpoint = checkpoint
        self._query_id: str | None = None
        self._producer = None
        self._appenders: dict[str, Appender] = {}

    def query_id(self) -> str:
        if self._query_id is None:
            self._query_id = query_id_of(self.checkpoint)
        return self._query_id

    def app_id(self) -> str:
        return f"speed-{self.query_id()}"

    def commit(self, spec: TableSpec, rows: pa.Table, batch_id: int) -> int | None:
        """Append ``rows`` keyed (this query, ``batch_id``); the version that carries them."""
        if spec.name not in self._appenders:
            self._appenders[spec.name] = self.lake.appender(spec)
        return self._appenders[spec.name].append_once(rows, self.app_id(), batch_id)

    def push(self, kind: str, batch_id: int, body: dict[str, Any]) -> None:
        """One speed-updates message; a replayed batch sends the same message again."""
        from lambdarec.kafka_io import make_producer, send_all

        if self._producer is None:
            self._producer = make_producer(self.settings, max_request_size=16 * 1024 * 1024)
        message = {"kind": kind, "query_id": self.query_id(), "batch_id": batch_id, **body}
        send_all(self._producer, self.settings.topic_speed_updates, [(None, json.dumps(message).encode())])

    def stamp(self, table: pa.Table, batch_id: int) -> pa.Table:
        n = table.num_rows
        return table.append_column("query_id", pa.array([self.query_id()] * n, pa.string())).append_column(
            "batch_id", pa.array([batch_id] * n, pa.int64())
        )


class EventsSink(Sink):
    """Events query: ``events``, ``dead_letter`` (bad and late records), ``speed_user_interactions``.

    Late means the record's Kafka timestamp is older than the dedupe window
    behind the newest timestamp of earlier batches: its duplicates may no longer
    be in the dedupe state, so it is dead-lettered (raw bytes kept, for a replay)
    rather than risk a duplicate or be dropped. That frontier is stored per batch
    in the checkpoint, so a replayed batch is classified exactly as before.
    """

    def __call__(self, batch: "DataFrame", batch_id: int) -> None:
        started = time.perf_counter()
        rows = batch.toArrow()  # the rows of speed.transforms.to_sink_rows
        timings = {"spark_ms": round(1000 * (time.perf_counter() - started))}
        cutoff_us = None if (frontier := self._frontier_before(batch_id)) is None else frontier - self._window_us()
        reason = late_marked(rows, cutoff_us)
        bad = pc.is_valid(reason)
        valid = rows.filter(pc.invert(bad))
        events = _struct_table(valid.column("event_row"))
        interactions = events.append_column("weight", valid.column("weight")).filter(
            pc.is_valid(valid.column("weight"))
        ).select(INTERACTION_COLUMNS)
        dead = _struct_table(rows.filter(bad).column("dead_row"))
        dead = dead.set_column(dead.schema.get_field_index("reason"), "reason", reason.filter(bad))
        self._write(batch_id, events, dead, interactions, timings)
        newest = pc.max(rows.column("ingest_ts")).value if rows.num_rows else None
        self._save_frontier(batch_id, max(x for x in (frontier, newest, -1) if x is not None))

    def _write(self, batch_id: int, events: pa.Table, dead: pa.Table, interactions: pa.Table,
               timings: dict[str, int]) -> None:
        if dead.num_rows:
            self.commit(DEAD_LETTER, dead, batch_id)
        late = dead.num_rows and pc.sum(pc.equal(dead.column("reason"), LATE)).as_py() or 0
        summary = {"event": "batch", "query": "events", "batch_id": batch_id, "events": events.num_rows,
                   "dead_letters": dead.num_rows, "late": late}
        if late:
            log.warning(json.dumps({"event": "late_events", "batch_id": batch_id, "late": late}))
        if events.num_rows:
            started = time.perf_counter()
            events_version = self.commit(EVENTS, events, batch_id)
            stamped = self.stamp(interactions.append_column(
                "events_version", pa.array([events_version] * interactions.num_rows, pa.int64())), batch_id)
            self.commit(SPEED_USER_INTERACTIONS, stamped, batch_id)
            committed = time.perf_counter()
            rows = [_jsonable(row) for row in interactions.to_pylist()]
            self.push(SPEED_UPDATE_KIND_USER_INTERACTIONS, batch_id, {"events_version": events_version, "rows": rows})
            timings.update(commit_ms=round(1000 * (committed - started)),
                                 push_ms=round(1000 * (time.perf_counter() - committed)))
            summary["events_version"] = events_version
        log.info(json.dumps({**summary, **timings}))  # where the batch's time went, beside Spark's own

    def _window_us(self) -> int:
        return int(interval_seconds(self.settings.speed_dedupe_window) * 1_000_000)

    def _frontier_dir(self) -> Path:
        return Path(self.checkpoint.removeprefix("file://")) / "lambdarec_frontier"

    def _frontier_before(self, batch_id: int) -> int | None:
        """Newest Kafka timestamp (µs) of the batches before ``batch_id``, None before the first."""
        folder = self._frontier_dir()
        earlier = [int(p.name) for p in folder.glob("[0-9]*") if int(p.name) < batch_id] if folder.exists() else []
        if not earlier:
            return None
        value = int((folder / str(max(earlier))).read_text())
        return value if value >= 0 else None

    def _save_frontier(self, batch_id: int, value: int) -> None:
        folder = self._frontier_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{batch_id}.tmp"
        tmp.write_text(str(value))
        os.replace(tmp, folder / str(batch_id))
        for old in folder.glob("[0-9]*"):
            if int(old.name) < batch_id - FRONTIERS_KEPT:
                old.unlink(missing_ok=True)


class FeaturesSink(Sink):
    """Features query: ``speed_user_features`` and ``speed_item_trending`` changelogs, then pushes."""

    def __call__(self, batch: "DataFrame", batch_id: int) -> None:
        rows = batch.toArrow()
        kinds = rows.column("kind")
        users = _user_table(rows.filter(pc.equal(kinds, "user")))
        items = _item_table(rows.filter(pc.equal(kinds, "item")))
        for spec, table, kind in ((SPEED_USER_FEATURES, users, SPEED_UPDATE_KIND_USER_FEATURES),
                                  (SPEED_ITEM_TRENDING, items, SPEED_UPDATE_KIND_ITEM_TRENDING)):
            if not table.num_rows:
                continue
            stamped = self.stamp(table, batch_id)
            self.commit(spec, stamped, batch_id)
            self.push(kind, batch_id, {"rows": [_jsonable(r) for r in stamped.to_pylist()]})
        log.info(json.dumps({"event": "batch", "query": "features", "batch_id": batch_id,
                             "users": users.num_rows, "items": items.num_rows}))


def late_marked(rows: pa.Table, cutoff_us: int | None) -> pa.ChunkedArray:
    """``reason``, with ``late_past_watermark`` for valid records whose Kafka timestamp is before ``cutoff_us``."""
    reason = rows.column("reason")
    if cutoff_us is None:
        return reason
    ingest = rows.column("ingest_ts")
    before = pc.less(ingest, pa.scalar(cutoff_us, pa.int64()).cast(ingest.type))
    late = pc.fill_null(pc.and_kleene(pc.is_null(reason), before), False)
    return pc.if_else(late, pa.scalar(LATE, reason.type), reason)


def _struct_table(column: pa.ChunkedArray) -> pa.Table:
    """A table from a column of structs, one table column per struct field."""
    structs = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return pa.Table.from_arrays(structs.flatten(), names=[field.name for field in column.type])


def _micros(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(column, pa.timestamp("us", tz="UTC"))


def _counts(column: pa.ChunkedArray) -> pa.Array:
    return pa.array([[tuple(p) for p in json.loads(v)] for v in column.to_pylist()], pa.map_(pa.string(), pa.int64()))


def _user_table(rows: pa.Table) -> pa.Table:
    spec = SPEED_USER_FEATURES.schema
    return pa.table({
        "user_id": rows.column("user_id"),
        "last_seen": _micros(rows.column("last_seen")),
        "session_id": rows.column("session_id"),
        "session_start": _micros(rows.column("session_start")),
        "session_events": rows.column("session_events"),
        "counts_1h": _counts(rows.column("counts_1h")),
        "counts_24h": _counts(rows.column("counts_24h")),
        "country": rows.column("country"),
        "device": rows.column("device"),
    }).cast(pa.schema([spec.field(n) for n in spec.names if n not in ("query_id", "batch_id")]))


def _item_table(rows: pa.Table) -> pa.Table:
    return pa.table({
        "segment_type": rows.column("segment_type"),
        "segment": rows.column("segment"),
        "window_start": _micros(rows.column("window_start")),
        "window_end": _micros(rows.column("window_end")),
        "item_id": rows.column("item_id"),
        "events": rows.column("events"),
        "weight": rows.column("weight"),
    })


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _json_value(v) for k, v in row.items()}


def _json_value(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list):  # a map column arrives as [(key, value), ...]
        return dict(value)
    return value
