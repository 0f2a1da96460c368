"""The speed layer's streaming job: Kafka ``events`` → Delta tables → ``speed-updates``.

Run it as a user would: ``spark-submit speed/job.py`` (or ``lambdarec speed``).
It runs two Structured Streaming queries in one driver, both checkpointed:

- the events query (fast trigger) reads ``events`` through the ``lambdarec_kafka``
  source, validates, drops no-consent events, deduplicates by event_id and
  commits ``events``, ``dead_letter`` and ``speed_user_interactions``, then
  pushes the interactions serving folds in (``speed.sinks.EventsSink``);
- the features query (slower trigger) follows those pushes on ``speed-updates``
  and keeps per-user and per-item state in the RocksDB state store
  (``speed.stateful``), committing ``speed_user_features`` and
  ``speed_item_trending`` (``speed.sinks.FeaturesSink``).

Keeping the stateful work out of the events query keeps serving's fold-in path
as short as one micro-batch. A listener records each batch's progress
(``speed.progress``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import (
    DEAD_LETTER,
    EVENTS,
    SPEED_ITEM_TRENDING,
    SPEED_PROGRESS,
    SPEED_USER_FEATURES,
    SPEED_USER_INTERACTIONS,
)
from speed import progress
from speed.sinks import EventsSink, FeaturesSink
from speed.transforms import consented, parse_records, to_sink_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger("lambdarec.speed")
QUERY_NAME = "lambdarec_speed"
FEATURES_QUERY_NAME = "lambdarec_speed_features"
# FAIR: each query schedules in a pool of its own (see _start). The longer socket timeout
# lets Python workers start on a saturated machine instead of failing the query.
JOB_CONF = {"spark.scheduler.mode": "FAIR", "spark.python.authenticate.socketTimeout": "120s"}
ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"


def checkpoint_location(settings: Settings) -> str:
    return f"{settings.checkpoint_root}/speed"


def features_checkpoint_location(settings: Settings) -> str:
    return f"{settings.checkpoint_root}/speed_features"


def kafka_stream(spark: "SparkSession", settings: Settings, topic: str) -> "DataFrame":
    """A topic as a stream of records, with the speed settings' offsets policy and admission limit."""
    from speed.kafka_source import register

    register(spark)
    return (
        spark.readStream.format("lambdarec_kafka")
        .option("bootstrap.servers", settings.bootstrap_servers)
        .option("topic", topic)
        .option("startingOffsets", settings.speed_starting_offsets)
        .option("failOnDataLoss", str(settings.speed_fail_on_data_loss).lower())
        .option("maxOffsetsPerTrigger", str(settings.speed_max_offsets_per_trigger))
        .load()
    )


def build_stream(spark: "SparkSession", settings: Settings) -> "DataFrame":
    """The events query's stream: parsed, validated, consented and deduplicated records as sink rows.

    Dedupe runs on the batch's processing time, so Spark itself never drops a
    record as late; the sink dead-letters late records against the Kafka-time
    frontier instead, where they are counted and kept. The sink projection is
    part of the plan, built once here: built per batch inside the sink, its
    py4j calls and analysis cost 130–260 ms of every micro-batch.
    """
    parsed = consented(parse_records(kafka_stream(spark, settings, settings.topic_events), settings))
    deduplicated = (
        parsed.withWatermark("seen_at", settings.speed_dedupe_window)
        .dropDuplicatesWithinWatermark(["dedupe_key"])
    )
    return to_sink_rows(deduplicated, settings)


def _start(stream: "DataFrame", name: str, checkpoint: str, sink, trigger_ms: int, available_now: bool):
    """Start a query in a scheduler pool of its own: under FAIR scheduling a long features batch
    cannot hold both cores while an events batch waits."""
    stream.sparkSession.sparkContext.setLocalProperty("spark.scheduler.pool", name)
    writer = stream.writeStream.queryName(name).option("checkpointLocation", checkpoint).foreachBatch(sink)
    trigger = {"availableNow": True} if available_now else {"processingTime": f"{trigger_ms} milliseconds"}
    return writer.trigger(**trigger).start()


def prepare(spark: "SparkSession", settings: Settings) -> None:
    """Tables exist; no-data micro-batches are off.

    With processing-time state TTL, no-data batches would run back to back on an
    idle topic (and an ``availableNow`` run would never end); expired state is
    dropped by the next batch with data instead.
    """
    spark.conf.set("spark.sql.streaming.noDataMicroBatches.enabled", "false")
    lake = Lake(settings)
    for spec in (EVENTS, DEAD_LETTER, SPEED_USER_INTERACTIONS, SPEED_USER_FEATURES, SPEED_ITEM_TRENDING,
                 SPEED_PROGRESS):
        lake.ensure(spec)


@contextmanager
def session_conf(spark: "SparkSession", conf: dict[str, str]):
    """Set SQL confs while a query starts: it copies the session then, and its checkpoint keeps them."""
    previous = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def run(spark: "SparkSession", settings: Settings, available_now: bool = False) -> "StreamingQuery":
    """Start the events query and return it; ``available_now`` processes what is there, then stops."""
    prepare(spark, settings)
    checkpoint = checkpoint_location(settings)
    with session_conf(spark, {"spark.sql.shuffle.partitions": str(settings.speed_dedupe_partitions)}):
        query = _start(build_stream(spark, settings), QUERY_NAME, checkpoint, EventsSink(settings, checkpoint),
                       settings.speed_trigger_ms, available_now)
    progress.watch(spark, query, settings, push=True)
    return query


def run_features(spark: "SparkSession", settings: Settings, available_now: bool = False) -> "StreamingQuery":
    """Start the features query over the events query's pushes and return it."""
    from speed.stateful import feature_rows, interactions

    prepare(spark, settings)
    checkpoint = features_checkpoint_location(settings)
    updates = kafka_stream(spark, settings, settings.topic_speed_updates)
    rows = feature_rows(interactions(updates, settings), settings)
    # RocksDB holds the per-entity state; a single state partition keeps each features batch to
    # one task, leaving the other core to the events query that serving's freshness waits on.
    with session_conf(spark, {"spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
                              "spark.sql.shuffle.partitions": str(settings.speed_features_partitions)}):
        query = _start(rows, FEATURES_QUERY_NAME, checkpoint, FeaturesSink(settings, checkpoint),
                       settings.speed_features_trigger_ms, available_now)
    progress.watch(spark, query, settings, push=False)
    return query


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="Process every record already on the topic, then exit (a catch-up run).",
    )


def command(args: argparse.Namespace, settings: Settings) -> int:
    from lambdarec.spark import build_spark

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spark = build_spark(settings, "lambdarec-speed", JOB_CONF)
    queries = [run(spark, settings, available_now=args.available_now)]
    if not args.available_now:  # a catch-up run has no pushes of its own to wait for
        queries.append(run_features(spark, settings))
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    log.info(json.dumps({"event": "started", "query_id": str(queries[0].id),
                         "queries": [q.name for q in queries], "checkpoint": checkpoint_location(settings)}))
    # Poll rather than block: a signal handler must not call into the JVM mid-call.
    while all(q.isActive for q in queries) and not stopping:
        queries[0].awaitTermination(0.5)
    if stopping:
        log.info(json.dumps({"event": "stopping", "signal": stopping[0]}))
    for query in queries:
        query.stop()
    errors = [str(q.exception()) for q in queries if q.exception() is not None]
    spark.stop()
    if errors:
        log.error(json.dumps({"event": "failed", "errors": errors}))
        return 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spark-submit speed/job.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return command(parser.parse_args(argv), Settings())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
