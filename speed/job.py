"""The speed layer's streaming job: Kafka ``events`` → Delta tables → ``speed-updates``.

Run it as a user would: ``spark-submit speed/job.py`` (or ``lambdarec speed``).
Spark Structured Streaming reads Kafka through the ``lambdarec_kafka`` Python
data source, whose offsets live in the checkpoint. Each micro-batch is parsed
and validated in Spark, deduplicated by event_id within a watermark, and then
committed to Delta keyed by (query id, batch id) app transactions: a batch
replayed after a crash — even one that crashed between the Delta commit and
Spark's own commit log — writes nothing twice. Only after the commits does the
batch go to serving on ``speed-updates``.

Micro-batches are bounded by ``maxOffsetsPerTrigger``, so their rows are
brought to the driver as Arrow and committed by delta-rs directly: that saves
a Spark write job per table per batch, which is most of a batch's latency.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import DEAD_LETTER, EVENTS, SPEED_USER_INTERACTIONS
from schemas.topics import SPEED_UPDATE_KIND_USER_INTERACTIONS
from speed.transforms import consented, parse_records, to_dead_letters, to_events, to_user_interactions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger("lambdarec.speed")
QUERY_NAME = "lambdarec_speed"


def checkpoint_location(settings: Settings) -> str:
    return f"{settings.checkpoint_root}/speed"


def build_stream(spark: "SparkSession", settings: Settings) -> "DataFrame":
    """The streaming DataFrame: parsed, validated, consented and deduplicated records."""
    from speed.kafka_source import register

    register(spark)
    records = (
        spark.readStream.format("lambdarec_kafka")
        .option("bootstrap.servers", settings.bootstrap_servers)
        .option("topic", settings.topic_events)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(settings.speed_max_offsets_per_trigger))
        .load()
    )
    parsed = consented(parse_records(records, settings))
    return parsed.withWatermark("ingest_ts", settings.speed_dedupe_window).dropDuplicatesWithinWatermark(
        ["dedupe_key"]
    )


class BatchSink:
    """foreachBatch sink: exactly-once Delta commits per (query, batch), then a push to serving."""

    def __init__(self, settings: Settings, checkpoint: str):
        self.settings = settings
        self.lake = Lake(settings)
        self.checkpoint = checkpoint
        self._query_id: str | None = None
        self._producer = None

    def query_id(self) -> str:
        """The query's id from its checkpoint: stable across restarts of the same query."""
        if self._query_id is None:
            metadata = Path(self.checkpoint.removeprefix("file://")) / "metadata"
            self._query_id = json.loads(metadata.read_text().splitlines()[0])["id"]
        return self._query_id

    def __call__(self, batch: "DataFrame", batch_id: int) -> None:
        batch.persist()
        try:
            events = to_events(batch)
            self._write(batch_id, events.toArrow(), to_dead_letters(batch).toArrow(),
                        to_user_interactions(events, self.settings).toArrow())
        finally:
            batch.unpersist()

    def _write(self, batch_id: int, events: pa.Table, dead: pa.Table, interactions: pa.Table) -> None:
        query_id = self.query_id()
        app = f"speed-{query_id}"
        if dead.num_rows:
            self.lake.append_arrow(DEAD_LETTER, dead, app_id=app, txn_version=batch_id)
        if not events.num_rows:
            log.info(json.dumps({"event": "batch", "batch_id": batch_id, "events": 0, "dead_letters": dead.num_rows}))
            return
        self.lake.append_arrow(EVENTS, events, app_id=app, txn_version=batch_id)
        events_version = self.lake.commit_version(EVENTS, app, batch_id)
        interactions = (
            interactions.append_column("events_version", pa.array([events_version] * interactions.num_rows, pa.int64()))
            .append_column("query_id", pa.array([query_id] * interactions.num_rows, pa.string()))
            .append_column("batch_id", pa.array([batch_id] * interactions.num_rows, pa.int64()))
        )
        self.lake.append_arrow(SPEED_USER_INTERACTIONS, interactions, app_id=app, txn_version=batch_id)
        self._push(query_id, batch_id, events_version, interactions)
        log.info(
            json.dumps(
                {
                    "event": "batch",
                    "batch_id": batch_id,
                    "events": events.num_rows,
                    "dead_letters": dead.num_rows,
                    "events_version": events_version,
                }
            )
        )

    def _push(self, query_id: str, batch_id: int, events_version: int | None, interactions: pa.Table) -> None:
        """Send the batch's interactions to serving; a replayed batch sends the same message again."""
        from lambdarec.kafka_io import make_producer, send_all

        if self._producer is None:
            self._producer = make_producer(self.settings, max_request_size=16 * 1024 * 1024)
        message = {
            "kind": SPEED_UPDATE_KIND_USER_INTERACTIONS,
            "query_id": query_id,
            "batch_id": batch_id,
            "events_version": events_version,
            "rows": [_jsonable(row) for row in interactions.select(
                ["user_id", "item_id", "event_type", "weight", "occurred_at", "event_id"]
            ).to_pylist()],
        }
        send_all(self._producer, self.settings.topic_speed_updates, [(None, json.dumps(message).encode())])

def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def run(spark: "SparkSession", settings: Settings, available_now: bool = False) -> "StreamingQuery":
    """Start the speed query and return it; ``available_now`` processes what is there, then stops."""
    lake = Lake(settings)
    for spec in (EVENTS, DEAD_LETTER, SPEED_USER_INTERACTIONS):
        lake.ensure(spec)
    checkpoint = checkpoint_location(settings)
    sink = BatchSink(settings, checkpoint)
    writer = (
        build_stream(spark, settings)
        .writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", checkpoint)
        .foreachBatch(sink)
    )
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(
        processingTime=f"{settings.speed_trigger_ms} milliseconds"
    )
    return writer.start()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="Process every record already on the topic, then exit (a catch-up run).",
    )


def command(args: argparse.Namespace, settings: Settings) -> int:
    from lambdarec.spark import build_spark

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spark = build_spark(settings, "lambdarec-speed")
    query = run(spark, settings, available_now=args.available_now)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    log.info(json.dumps({"event": "started", "query_id": str(query.id), "checkpoint": checkpoint_location(settings)}))
    # Poll rather than block: a signal handler must not call into the JVM mid-call.
    while query.isActive and not stopping:
        query.awaitTermination(0.5)
    if stopping:
        log.info(json.dumps({"event": "stopping", "signal": stopping[0]}))
        query.stop()
    error = query.exception()
    spark.stop()
    if error is not None:
        log.error(json.dumps({"event": "failed", "error": str(error)}))
        return 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spark-submit speed/job.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return command(parser.parse_args(argv), Settings())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
