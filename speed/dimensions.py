"""The dimensions query: Debezium's change events → Delta ``MERGE`` into ``item_catalogue`` and ``user_profiles``.

A micro-batch query of the speed job over the CDC topics (``schemas.cdc``).
Each batch parses the envelopes, keeps per key the change with the newest LSN
(then Kafka offset), and MERGEs them into the table: an insert, update or
snapshot read upserts the row, a delete removes a user's row and marks an item's
deleted and unavailable (the model still holds the item; serving must know it is
gone; a delete of an item the table never held adds nothing), and a change older than the
row's ``source_lsn`` changes nothing, so a change Connect delivers twice (it is at
least once) is applied once. Spark parses and validates; the parsed changes come
to the driver as Arrow and each table's MERGE runs with delta-rs, carrying the
app transaction (``speed-<query id>``, the batch id), so a replayed batch writes
nothing twice. (A delta-spark MERGE plans several Spark jobs per table, which kept
every batch busy for seconds on two cores, however few its changes.)
Tombstones (null values after a delete) carry nothing and are skipped. A change
that cannot be applied — a broken envelope, a value that does not convert — goes
to ``dead_letter`` with its reason; a user's raw id in it is redacted. User ids are
pseudonymised with the API's keyed HMAC before anything is written.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lambdarec.pseudonym import spark_pseudonym
from lambdarec.settings import Settings
from schemas.cdc import DELETE, DIMENSIONS, ENVELOPE_SCHEMA, ITEMS, OPS, USERS, Dimension, topic, topics
from schemas.events import REDACTED_USER_ID
from schemas.tables import DEAD_LETTER, USER_PROFILES
from speed.metrics import METRICS
from speed.sinks import Sink

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger("lambdarec.speed")
INVALID = "cdc_invalid"


def build_stream(spark: "SparkSession", settings: Settings) -> "DataFrame":
    """The CDC topics as records (Spark's Kafka source; offsets in the checkpoint)."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("subscribe", ",".join(topics(settings.cdc_topic_prefix)))
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", str(settings.speed_fail_on_data_loss).lower())
        .option("maxOffsetsPerTrigger", str(settings.speed_max_offsets_per_trigger))
        .load()
    )


def parse(records: "DataFrame", dimension: Dimension, settings: Settings) -> "DataFrame":
    """One topic's records as (``reason``, ``op``, ``lsn``, the lake row's columns, the Kafka position);
    ``reason`` is null for a change that applies. Tombstones are dropped here."""
    from pyspark.sql import functions as F

    text = F.col("value").cast("string")
    envelope = F.from_json(text, ENVELOPE_SCHEMA)
    rows = (records.filter(F.col("value").isNotNull())
            .withColumn("envelope", envelope)
            .withColumn("row", F.from_json(F.coalesce(F.col("envelope.after"), F.col("envelope.before")),
                                           dimension.after_schema)))
    key = F.coalesce(F.col("row")[dimension.key], F.get_json_object(F.col("key").cast("string"), f"$.{dimension.key}"))
    values, required = _values(dimension)
    checks = [
        (F.try_parse_json(text).isNull(), F.lit("malformed_json")),
        (~F.col("envelope.op").isin(*OPS) | F.col("envelope.op").isNull(), F.lit(f"{INVALID}:op")),
        (F.col("envelope.source.lsn").isNull(), F.lit(f"{INVALID}:source.lsn")),
        (key.isNull(), F.lit(f"{INVALID}:{dimension.key}")),
        ((F.col("envelope.op") != DELETE) & F.col("envelope.after").isNull(), F.lit(f"{INVALID}:after")),
    ]
    upsert = F.col("envelope.op") != DELETE
    checks += [(upsert & F.col(f"row.{name}").isNotNull() & values[name].isNull(), F.lit(f"{INVALID}:after.{name}"))
               for name in values if name in _raw_fields(dimension)]
    checks += [(upsert & values[name].isNull(), F.lit(f"{INVALID}:after.{name}")) for name in required]
    reason = F.lit(None).cast("string")
    for condition, label in reversed(checks):
        reason = F.when(condition, label).otherwise(reason)
    key_value = spark_pseudonym(key, settings.pseudonym_key) if dimension is USERS else key
    return rows.select(
        reason.alias("reason"), F.col("envelope.op").alias("op"), F.col("envelope.source.lsn").alias("lsn"),
        key_value.alias(dimension.key), *[values[name].alias(name) for name in values if name != dimension.key],
        _dead_raw(dimension).alias("raw"), "topic", "partition", "offset",
    )


def _raw_fields(dimension: Dimension) -> set[str]:
    return {part.split()[0] for part in dimension.after_schema.split(", ")}


def _values(dimension: Dimension) -> tuple[dict[str, "Column"], tuple[str, ...]]:
    """The lake row's columns converted from the parsed row (null where a value does not convert),
    and the columns a row must have."""
    from pyspark.sql import functions as F

    row = "row."
    updated = F.try_to_timestamp(F.col(row + "updated_at"))
    if dimension is ITEMS:
        attributes = F.from_json(F.col(row + "attributes"), "map<string,string>")
        return {
            "item_id": F.col(row + "item_id"),
            "title": F.col(row + "title"),
            "category": F.col(row + "category"),
            "price": F.col(row + "price").try_cast("double"),
            "available": F.col(row + "available"),
            "attributes": F.when(F.col(row + "attributes").isNull(), F.create_map()).otherwise(attributes),
            "updated_at": updated,
        }, ("title", "available", "attributes", "updated_at")
    return {
        "user_id": F.col(row + "user_id"),
        "country": F.col(row + "country"),
        "age_band": F.col(row + "age_band"),
        "signup_date": F.date_add(F.lit("1970-01-01").cast("date"), F.col(row + "signup_date")),
        "membership": F.col(row + "membership"),
        "updated_at": updated,
    }, ("updated_at",)


def _dead_raw(dimension: Dimension) -> "Column":
    """A record's bytes for ``dead_letter``; for users, every ``user_id`` value in them redacted."""
    from pyspark.sql import functions as F

    if dimension is not USERS:
        return F.col("value")
    return F.regexp_replace(F.col("value").cast("string"), r'"user_id"\s*:\s*"(?:[^"\\]|\\.)*"',
                            f'"user_id":"{REDACTED_USER_ID}"').cast("binary")


class DimensionsSink(Sink):
    """foreachBatch sink: per table, the batch's changes parsed by Spark and brought to the driver as
    Arrow (changes are few next to events), the newest per key MERGEd with delta-rs, the bad ones
    appended to ``dead_letter``; each commit keyed by (this query, the batch). Like the other sinks,
    it deletes the rows of ready erasures from the user table it writes before its own commits."""

    erased_tables = (USER_PROFILES,)

    def __call__(self, batch: "DataFrame", batch_id: int) -> None:
        from pyspark.sql import functions as F

        started = time.perf_counter()
        self.files(batch)
        self.erasures.apply(batch.sparkSession)
        summary: dict[str, int] = {}
        dead: list[pa.Table] = []
        batch = batch.persist()  # read from Kafka once for both tables
        try:
            for dimension in DIMENSIONS:
                parsed = parse(batch.filter(F.col("topic") == topic(self.settings.cdc_topic_prefix, dimension.table)), dimension,
                               self.settings).toArrow()
                if not parsed.num_rows:
                    continue
                bad = pc.is_valid(parsed.column("reason"))
                summary[dimension.spec.name] = self._merge(parsed.filter(pc.invert(bad)), dimension, batch_id)
                METRICS.landed.labels(dimension.spec.name).inc(summary[dimension.spec.name])
                dead.append(_dead_letters(parsed.filter(bad)))
        finally:
            batch.unpersist()
        bad_rows = pa.concat_tables(dead) if dead else None
        if bad_rows is not None and bad_rows.num_rows:
            self.lake.ensure(DEAD_LETTER)
            self.lake.append_arrow(DEAD_LETTER, bad_rows, self.app_id(), batch_id)
            summary["dead_letters"] = bad_rows.num_rows
            METRICS.count_dead_letters({str(c["values"]): int(c["counts"])
                                        for c in pc.value_counts(bad_rows.column("reason")).to_pylist()})
        log.info(json.dumps({"event": "batch", "query": "dimensions", "batch_id": batch_id, **summary,
                             "ms": round((time.perf_counter() - started) * 1000)}))

    def _merge(self, changes: pa.Table, dimension: Dimension, batch_id: int) -> int:
        """MERGE the newest change per key; the number of keys it touched (0 if a replay found it done)."""
        latest = _newest_per_key(changes, dimension.key)
        if not latest.num_rows:
            return 0
        source = latest.rename_columns(["source_lsn" if name == "lsn" else name for name in latest.column_names])
        merger = self.lake.merge_arrow(dimension.spec, source, f"t.{dimension.key} = s.{dimension.key}",
                                       self.app_id(), batch_id)
        if merger is None:
            return 0
        columns = {name: "false" if name == "deleted" else f"s.{name}" for name in dimension.spec.columns}
        newer = "s.source_lsn >= coalesce(t.source_lsn, -1)"
        delete = f"s.op = '{DELETE}' AND {newer}"
        if dimension.keeps_deleted:
            merger = merger.when_matched_update(
                updates={"available": "false", "deleted": "true", "source_lsn": "s.source_lsn"}, predicate=delete)
        else:
            merger = merger.when_matched_delete(predicate=delete)
        (merger.when_matched_update(updates=columns, predicate=f"s.op != '{DELETE}' AND {newer}")
         .when_not_matched_insert(updates=columns, predicate=f"s.op != '{DELETE}'")
         .execute())
        return latest.num_rows


def _newest_per_key(changes: pa.Table, key: str) -> pa.Table:
    """Per key, the change with the greatest (LSN, Kafka partition, offset)."""
    if not changes.num_rows:
        return changes
    ordered = changes.sort_by([(key, "ascending"), ("lsn", "descending"), ("partition", "descending"),
                               ("offset", "descending")])
    keys = ordered.column(key).to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return ordered.filter(pa.array(first)).drop_columns(["reason", "raw", "topic", "partition", "offset"])


def _dead_letters(bad: pa.Table) -> pa.Table:
    now = datetime.now(UTC)
    return pa.table({
        "raw": bad.column("raw"), "reason": bad.column("reason"), "kafka_topic": bad.column("topic"),
        "kafka_partition": pc.cast(bad.column("partition"), pa.int32()), "kafka_offset": bad.column("offset"),
        "recorded_at": pa.array([now] * bad.num_rows, pa.timestamp("us", tz="UTC")),
    }, schema=DEAD_LETTER.schema)
