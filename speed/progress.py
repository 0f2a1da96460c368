"""Per-batch progress of the speed queries → ``speed_progress`` and a ``progress`` push.

A ``StreamingQueryListener`` turns each batch's progress into one row: rows in,
rates, duration, source lag (the broker's end offsets when the batch was
planned minus the offsets it processed up to) and the watermark. Rows are keyed
by (query id, batch id) app transactions like every other speed write, so a
replayed batch records nothing twice. The listener runs on Spark's listener bus,
off the query's own thread, so recording never delays a batch.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import pyarrow as pa
from pyspark.sql.streaming import StreamingQueryListener

from lambdarec.lake import Appender, Lake
from lambdarec.settings import Settings
from schemas.tables import SPEED_PROGRESS
from schemas.topics import SPEED_UPDATE_KIND_PROGRESS
from speed.metrics import METRICS

log = logging.getLogger("lambdarec.speed")


def source_lag(sources: list[Any]) -> int | None:
    """Records the broker had that the batch did not process, summed over Kafka sources and partitions.

    Spark's Kafka source writes offsets as ``{topic: {partition: offset}}``;
    sources without a latest offset (Delta) have no lag to report.
    """
    lag, known = 0, False
    for source in sources:
        if not source.latestOffset or not source.endOffset or not source.description.startswith("Kafka"):
            continue
        try:
            latest, end = json.loads(source.latestOffset), json.loads(source.endOffset)
        except ValueError:
            log.warning("event=progress_offsets_unreadable latest=%r end=%r", source.latestOffset, source.endOffset)
            continue
        for topic, partitions in latest.items():
            done = end.get(topic, {})
            lag += sum(max(int(offset) - int(done.get(p, 0)), 0) for p, offset in partitions.items())
            known = True
    return lag if known else None


def progress_row(progress: Any) -> dict[str, Any]:
    """One ``speed_progress`` row from a StreamingQueryProgress."""
    watermark = (progress.eventTime or {}).get("watermark")
    return {
        "query_id": str(progress.id),
        "query_name": progress.name,
        "run_id": str(progress.runId),
        "batch_id": int(progress.batchId),
        "recorded_at": _timestamp(progress.timestamp),
        "rows_in": int(progress.numInputRows),
        "input_rows_per_s": float(progress.inputRowsPerSecond or 0.0),
        "processed_rows_per_s": float(progress.processedRowsPerSecond or 0.0),
        "batch_duration_ms": int(progress.batchDuration),
        "source_lag": source_lag(progress.sources),
        "watermark": _timestamp(watermark) if watermark else None,
    }


def _timestamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class ProgressRecorder(StreamingQueryListener):
    """Records every batch of the queries it watches; a failure is logged, never raised.

    One recorder serves a Spark session; each watched query brings its own
    settings (lake, broker). Only queries watched with ``push`` also push
    ``progress`` to speed-updates: the features query reads that topic, and a
    push per features batch would wake it again forever.
    """

    def __init__(self):
        self._watched: dict[str, tuple[Settings, bool]] = {}
        self._producers: dict[str, Any] = {}
        self._appenders: dict[str, Appender] = {}

    def watch(self, query_id: str, settings: Settings, push: bool) -> None:
        self._watched[str(query_id)] = (settings, push)

    def onQueryStarted(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        self._watched.pop(str(event.id), None)

    def onQueryProgress(self, event) -> None:
        watched = self._watched.get(str(event.progress.id))
        if watched is None:
            return
        try:
            row = progress_row(event.progress)
            log.info(json.dumps({"event": "progress", "query": row["query_name"], "batch_id": row["batch_id"],
                                 "rows_in": row["rows_in"], "source_lag": row["source_lag"],
                                 "duration_ms": dict(event.progress.durationMs)}))  # where a batch's time goes
            METRICS.observe_progress(row, list(event.progress.stateOperators or ()))
            self.record(row, *watched)
        except Exception:  # a listener that raises is removed by Spark; losing one row is better
            log.exception("event=progress_record_failed")

    def record(self, row: dict[str, Any], settings: Settings, push: bool) -> None:
        from lambdarec.kafka_io import make_producer, send_all

        app = f"progress-{row['query_id']}"
        appender = self._appenders.get(settings.lake_root)
        if appender is None:
            appender = self._appenders[settings.lake_root] = Lake(settings).appender(SPEED_PROGRESS)
        if appender.committed(app, row["batch_id"]):
            return  # a replayed batch, already recorded
        appender.append(pa.Table.from_pylist([row]), app, row["batch_id"])
        if not push:
            return
        producer = self._producers.get(settings.bootstrap_servers)
        if producer is None:
            producer = self._producers[settings.bootstrap_servers] = make_producer(settings)
        message = {"kind": SPEED_UPDATE_KIND_PROGRESS, "query_id": row["query_id"], "batch_id": row["batch_id"],
                   "progress": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}}
        send_all(producer, settings.topic_speed_updates, [(None, json.dumps(message).encode())])


_recorders: dict[int, ProgressRecorder] = {}


def watch(spark, query, settings: Settings, push: bool) -> None:
    """Record ``query``'s progress (the session's one recorder is added on first use)."""
    recorder = _recorders.get(id(spark))
    if recorder is None:
        recorder = _recorders[id(spark)] = ProgressRecorder()
        spark.streams.addListener(recorder)
    recorder.watch(query.id, settings, push)
