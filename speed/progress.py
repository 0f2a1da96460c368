"""Per-batch progress of the speed queries → ``speed_progress`` and a ``progress`` push.

A ``StreamingQueryListener`` turns each batch's progress into one row: rows in,
rates, duration, source lag (the broker's end offsets when the batch was
planned minus the offsets it processed up to) and the watermark. Rows are keyed
by (query id, batch id) app transactions like every other speed write, so a
replayed batch records nothing twice. The listener runs on Spark's listener bus,
off the query's own thread, so recording never delays a batch; a run that ends
waits for its last batch's row (``wait_recorded``) before the process exits.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
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

    def __init__(self) -> None:
        self._watched: dict[str, tuple[Settings, bool]] = {}
        self._producers: dict[str, Any] = {}
        self._appenders: dict[str, Appender] = {}
        self._handled: dict[str, int] = {}  # run id → the last batch whose progress was handled
        self._handled_changed = threading.Condition()

    def watch(self, query_name: str, settings: Settings, push: bool) -> None:
        """Watch the query named ``query_name`` from its next start (before it, so no batch is missed)."""
        self._watched[query_name] = (settings, push)

    def onQueryStarted(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        pass

    def onQueryProgress(self, event) -> None:
        watched = self._watched.get(event.progress.name)
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
        finally:
            with self._handled_changed:
                self._handled[str(event.progress.runId)] = int(event.progress.batchId)
                self._handled_changed.notify_all()

    def wait_recorded(self, query, timeout_s: float) -> bool:
        """Whether the progress of ``query``'s last batch was handled within ``timeout_s``.

        Spark delivers progress to listeners asynchronously, so a query that has
        ended may still have its last row on the way.
        """
        last = query.lastProgress
        if last is None or str(last.name) not in self._watched:
            return True
        run_id, batch_id = str(last.runId), int(last.batchId)
        with self._handled_changed:
            return self._handled_changed.wait_for(lambda: self._handled.get(run_id, -1) >= batch_id, timeout_s)

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


def recorder(spark) -> ProgressRecorder:
    """The session's one recorder, added to it on first use."""
    found = _recorders.get(id(spark))
    if found is None:
        found = _recorders[id(spark)] = ProgressRecorder()
        spark.streams.addListener(found)
    return found


def watch(spark, query_name: str, settings: Settings, push: bool) -> None:
    """Record the progress of the query named ``query_name``; call it before the query starts."""
    recorder(spark).watch(query_name, settings, push)


def wait_recorded(spark, query, timeout_s: float = 60.0) -> None:
    """Block until ``query``'s last batch is recorded (an ended query's last row may still be on the way)."""
    if not recorder(spark).wait_recorded(query, timeout_s):
        log.warning(json.dumps({"event": "progress_not_recorded", "query": query.name, "timeout_s": timeout_s}))
