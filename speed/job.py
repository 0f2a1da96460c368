"""The speed layer's streaming job: Kafka ``events`` → Delta tables and ``speed-updates``.

Run it as a user would: ``spark-submit speed/job.py`` (or ``lambdarec speed``).
It runs four Structured Streaming queries in one driver, each checkpointed:

- the real-time query (``trigger(realTime=...)``, Spark's real-time mode) reads
  ``events`` with Spark's Kafka source, validates with built-in functions, drops
  no-consent events and writes each accepted event to ``speed-updates`` through
  the Kafka sink within milliseconds: the path serving's fold-in waits on. It
  keeps no state, so it is at least once; serving drops repeated event ids. If
  it fails, the job starts it again (``speed.realtime_restart``);
- the events query (micro-batches) reads the same records, deduplicates by
  event_id and commits ``events``, ``dead_letter`` and ``speed_user_interactions``
  exactly once through delta-spark, then sends each event again with the
  ``events`` version that holds it (``speed.sinks.EventsSink``);
- the features query (slower trigger) streams ``events`` from Delta and keeps
  per-user and per-item state in the RocksDB state store (``speed.stateful``),
  committing ``speed_user_features`` and ``speed_item_trending``
  (``speed.sinks.FeaturesSink``);
- the dimensions query (micro-batches) reads the CDC topics of the operational
  database and MERGEs each change into ``item_catalogue`` and ``user_profiles``
  (``speed.dimensions``; ``speed_cdc`` turns it off).

A listener records each micro-batch's progress (``speed.progress``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import TYPE_CHECKING

from lambdarec import speed_state_retention
from lambdarec.checkpoint_files import CheckpointFiles, speed_checkpoint
from lambdarec.key_fingerprint import verify_pseudonym_key
from lambdarec.lake import Lake, session_conf  # set while a query starts: it copies the session then
from lambdarec.settings import Settings
from schemas.tables import (
    DEAD_LETTER,
    EVENTS,
    ITEM_CATALOGUE,
    SPEED_ITEM_TRENDING,
    SPEED_PROGRESS,
    SPEED_USER_FEATURES,
    SPEED_USER_INTERACTIONS,
    PRIVACY_REQUESTS,
    USER_PROFILES,
)
from speed import metrics, progress
from speed.realtime_restart import RestartingQuery
from speed.sinks import EventsSink, FeaturesSink
from speed.transforms import (
    consented,
    interaction_messages,
    parse_records,
    realtime_interactions,
    to_sink_rows,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger("lambdarec.speed")
QUERY_NAME = "lambdarec_speed"
FEATURES_QUERY_NAME = "lambdarec_speed_features"
REALTIME_QUERY_NAME = "lambdarec_speed_realtime"
DIMENSIONS_QUERY_NAME = "lambdarec_speed_dimensions"
# FAIR: each query schedules in a pool of its own (see _start). The longer socket timeout
# lets Python workers start on a saturated machine instead of failing the query.
JOB_CONF = {"spark.scheduler.mode": "FAIR", "spark.python.authenticate.socketTimeout": "120s"}
ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"


def checkpoint_location(settings: Settings) -> str:
    return speed_checkpoint(settings, "events")


def features_checkpoint_location(settings: Settings) -> str:
    return speed_checkpoint(settings, "features")


def realtime_checkpoint_location(settings: Settings) -> str:
    return speed_checkpoint(settings, "realtime")


def kafka_stream(spark: "SparkSession", settings: Settings, admission_limit: bool = True,
                 topics: tuple[str, ...] = ()) -> "DataFrame":
    """The events topic (and ``topics``) as a stream of records (Spark's Kafka source, offsets in the checkpoint).

    ``failOnDataLoss`` is deliberate (``speed_fail_on_data_loss``): offsets the
    checkpoint holds that the broker no longer has stop the query rather than
    skip records silently. ``maxOffsetsPerTrigger`` bounds a micro-batch; real-time
    mode reads continuously and takes no such limit.
    """
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("subscribe", ",".join([settings.topic_events, *topics]))
        .option("startingOffsets", settings.speed_starting_offsets)
        .option("failOnDataLoss", str(settings.speed_fail_on_data_loss).lower())
    )
    if admission_limit:
        reader = reader.option("maxOffsetsPerTrigger", str(settings.speed_max_offsets_per_trigger))
    return reader.load()


def build_stream(spark: "SparkSession", settings: Settings) -> "DataFrame":
    """The events query's stream: parsed, validated, consented and deduplicated records as sink rows.

    The query also subscribes to the consent topic, whose records it drops here: a
    consent change alone starts a micro-batch, in which the sink reads the topic
    (``speed.consent``), so a change is stored even while no event arrives.

    Dedupe runs on the batch's processing time, so Spark itself never drops a
    record as late; the sink dead-letters late records against the Kafka-time
    frontier instead, where they are counted and kept. The sink projection is
    part of the plan, built once here: built per batch inside the sink, its
    py4j calls and analysis would be paid again by every micro-batch.
    """
    from pyspark.sql import functions as F

    records = kafka_stream(spark, settings, topics=(settings.topic_consent,))
    parsed = consented(parse_records(records.filter(F.col("topic") == settings.topic_events), settings))
    deduplicated = (
        parsed.withWatermark("seen_at", settings.speed_dedupe_window)
        .dropDuplicatesWithinWatermark(["dedupe_key"])
    )
    return to_sink_rows(deduplicated, settings)


def _start(stream: "DataFrame", name: str, checkpoint: str, sink, trigger_ms: int, available_now: bool):
    """Start a query in a scheduler pool of its own: under FAIR scheduling a long features batch
    cannot hold both cores while an events batch waits."""
    stream.sparkSession.sparkContext.setLocalProperty("spark.scheduler.pool", name)
    recover_first_batch(stream.sparkSession, name, checkpoint)
    writer = stream.writeStream.queryName(name).option("checkpointLocation", checkpoint).foreachBatch(sink)
    trigger = {"availableNow": True} if available_now else {"processingTime": f"{trigger_ms} milliseconds"}
    return writer.trigger(**trigger).start()


def recover_first_batch(spark: "SparkSession", name: str, checkpoint: str) -> None:
    """Let a query killed while it began its first batch start again (``CheckpointFiles``)."""
    discarded = CheckpointFiles(spark, checkpoint).discard_interrupted_first_offsets()
    if discarded:
        log.warning(json.dumps({"event": "discarded_interrupted_first_batch", "query": name, "files": discarded}))


def run_realtime(spark: "SparkSession", settings: Settings) -> "StreamingQuery":
    """Start the real-time query: events → validate, consent → ``interaction`` messages on speed-updates.

    Stateless and built from built-in functions only, as real-time mode requires;
    it holds one task slot per events partition for as long as it runs.
    """
    check_task_slots(spark, settings)
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", REALTIME_QUERY_NAME)
    recover_first_batch(spark, REALTIME_QUERY_NAME, realtime_checkpoint_location(settings))
    messages = interaction_messages(realtime_interactions(
        parse_records(kafka_stream(spark, settings, admission_limit=False), settings), settings))
    return (
        messages.writeStream.queryName(REALTIME_QUERY_NAME)
        .format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("topic", settings.topic_speed_updates)
        .option("checkpointLocation", realtime_checkpoint_location(settings))
        .outputMode("update")
        .trigger(realTime=settings.speed_realtime_batch)  # type: ignore[call-overload]  # Spark 4.2's real-time mode; the stubs lag
        .start()
    )


def task_slots(spark: "SparkSession") -> int:
    """Tasks this application runs at once: N of ``local[N]`` (cores for ``local[*]``), else executor cores."""
    import os
    import re

    master = spark.sparkContext.master or ""
    local = re.fullmatch(r"local\[(\d+|\*)(?:,\s*\d+)?\]", master)
    if local:
        return os.cpu_count() or 1 if local.group(1) == "*" else int(local.group(1))
    if master == "local":
        return 1
    return spark.sparkContext.defaultParallelism


def check_task_slots(spark: "SparkSession", settings: Settings) -> None:
    """Refuse to start real-time mode where it would take every task slot and starve the other queries."""
    from lambdarec.kafka_io import make_consumer

    consumer = make_consumer(settings.bootstrap_servers)
    try:
        partitions = len(consumer.partitions_for_topic(settings.topic_events) or ()) or settings.topic_partitions
    finally:
        consumer.close()
    slots = task_slots(spark)
    if slots < partitions + 2:
        raise RuntimeError(
            f"the real-time query holds {partitions} task slots (one per partition of {settings.topic_events!r}) "
            f"and the micro-batch queries need 2 more, but this Spark application has {slots}. Raise the slots "
            f"(LAMBDAREC_SPEED_SPARK_MASTER=local[{partitions + 2}] or more executor cores) or turn the real-time "
            "query off (LAMBDAREC_SPEED_REALTIME=false)."
        )


def prepare(spark: "SparkSession", settings: Settings) -> None:
    """Tables exist; no-data micro-batches are off; state store maintenance runs as often as erasures need.

    With processing-time state TTL, no-data batches would run back to back on an
    idle topic (and an ``availableNow`` run would never end); expired state is
    dropped by the next batch with data instead.
    """
    spark.conf.set("spark.sql.streaming.noDataMicroBatches.enabled", "false")
    for key, value in speed_state_retention.session_conf(settings).items():
        spark.conf.set(key, value)
    lake = Lake(settings)
    for spec in (EVENTS, DEAD_LETTER, SPEED_USER_INTERACTIONS, SPEED_USER_FEATURES, SPEED_ITEM_TRENDING,
                 SPEED_PROGRESS, PRIVACY_REQUESTS, USER_PROFILES, ITEM_CATALOGUE):  # the features query joins the last two
        lake.ensure(spec)
        lake.add_missing_columns(spec)


def run(spark: "SparkSession", settings: Settings, available_now: bool = False) -> "StreamingQuery":
    """Start the events query and return it; ``available_now`` processes what is there, then stops."""
    prepare(spark, settings)
    checkpoint = checkpoint_location(settings)
    progress.watch(spark, QUERY_NAME, settings, push=True)
    with session_conf(spark, {"spark.sql.shuffle.partitions": str(settings.speed_dedupe_partitions)}):
        return _start(build_stream(spark, settings), QUERY_NAME, checkpoint, EventsSink(settings, checkpoint),
                      settings.speed_trigger_ms, available_now)


def run_features(spark: "SparkSession", settings: Settings, available_now: bool = False) -> "StreamingQuery":
    """Start the features query over the ``events`` table and the erasure markers, and return it."""
    from speed.stateful import erasure_markers, feature_rows, interactions

    prepare(spark, settings)
    checkpoint = features_checkpoint_location(settings)
    rows = feature_rows(interactions(spark, settings), settings, erasure_markers(spark, settings))
    # RocksDB holds the per-entity state; a single state partition keeps each features batch to
    # one task, leaving the other core to the events query that serving's freshness waits on.
    progress.watch(spark, FEATURES_QUERY_NAME, settings, push=False)
    # Its checkpoint keeps few state versions, each compacted, so an erased user's state is soon gone from
    # it (lambdarec.speed_state_retention).
    with session_conf(spark, {"spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
                              "spark.sql.shuffle.partitions": str(settings.speed_features_partitions),
                              **speed_state_retention.features_conf(settings)}):
        return _start(rows, FEATURES_QUERY_NAME, checkpoint, FeaturesSink(settings, checkpoint),
                      settings.speed_features_trigger_ms, available_now)


def run_dimensions(spark: "SparkSession", settings: Settings, available_now: bool = False) -> "StreamingQuery":
    """Start the dimensions query (CDC topics → MERGE into ``item_catalogue``/``user_profiles``) and return it."""
    from lambdarec import kafka_io
    from schemas.cdc import topics
    from speed.dimensions import DimensionsSink, build_stream as cdc_stream

    prepare(spark, settings)
    kafka_io.ensure_topics(settings, topics(settings.cdc_topic_prefix))  # before Connect makes them: no topic appears mid-query
    checkpoint = speed_checkpoint(settings, "dimensions")
    return _start(cdc_stream(spark, settings), DIMENSIONS_QUERY_NAME, checkpoint, DimensionsSink(settings, checkpoint),
                  settings.speed_dimensions_trigger_ms, available_now)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="Land every record already on the topics, one query after another, then exit (a catch-up run).",
    )


def catch_up(spark: "SparkSession", settings: Settings) -> list[str]:
    """Land what is on the topics now, each query after those it reads from, and return the errors.

    The dimensions come first (the features query joins them), then the events,
    then the features over the events just landed; each query ends, and its last
    progress row is recorded, before the next starts.
    """
    starts = ([run_dimensions] if settings.speed_cdc else []) + [run, run_features]
    for start in starts:
        query = start(spark, settings, available_now=True)
        query.awaitTermination()
        progress.wait_recorded(spark, query)
        if query.exception() is not None:
            return [str(query.exception())]
    return []


def follow(spark: "SparkSession", settings: Settings) -> list[str]:
    """Run every query until one fails or a signal asks to stop, and return the errors."""
    queries = [run(spark, settings), run_features(spark, settings)]
    if settings.speed_cdc:
        queries.append(run_dimensions(spark, settings))
    realtime = RestartingQuery(lambda: run_realtime(spark, settings)) if settings.speed_realtime else None
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    log.info(json.dumps({"event": "started", "query_id": str(queries[0].id),
                         "queries": [q.name for q in queries] + ([realtime.query.name] if realtime else []),
                         "checkpoint": checkpoint_location(settings)}))
    # Poll rather than block: a signal handler must not call into the JVM mid-call.
    while all(q.isActive for q in queries) and not stopping:
        queries[0].awaitTermination(0.5)  # type: ignore[arg-type]  # seconds; a fraction works, the stubs say int
        if realtime is not None:
            realtime.check()
    if stopping:
        log.info(json.dumps({"event": "stopping", "signal": stopping[0]}))
    for query in queries:
        query.stop()
    if realtime is not None:
        realtime.query.stop()
    return [str(q.exception()) for q in queries if q.exception() is not None]


def command(args: argparse.Namespace, settings: Settings) -> int:
    from lambdarec.spark import build_spark

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    verify_pseudonym_key(settings, "speed")  # before Spark: a key the lake's pseudonyms were not made with stops here
    speed_settings = settings.model_copy(update={"spark_master": settings.speed_spark_master})
    spark = build_spark(speed_settings, "lambdarec-speed", JOB_CONF)
    metrics.serve(settings.speed_metrics_host, settings.speed_metrics_port)
    errors = catch_up(spark, settings) if args.available_now else follow(spark, settings)
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
