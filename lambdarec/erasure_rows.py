"""Deleting an erased user's rows from one Delta table: what the erasure job and the speed sinks share.

Each table's DELETE is a MERGE ... WHEN MATCHED DELETE keyed by the app
transaction ``erasure-<request>-<table>``: whoever commits it first (the erasure
job, or the speed sink that writes the table) does it once, and everyone later
finds its version and count in the table's history. The pseudonym is in the
MERGE's source, never in its predicate, so the Delta log does not keep it.

Open-source Delta runs a MERGE at Serializable isolation: an append to a
partition it read, committed meanwhile, fails it. The speed sinks append to
``events``, ``dead_letter``, ``speed_user_interactions``, ``user_consent``, ``user_profiles`` and
``speed_user_features`` every few seconds, so under load the erasure job's
MERGE on those loses the race; each sink therefore also deletes, at the start of
a micro-batch, the rows of erasures that are ready (their speed-state marker is
recorded), while no append of its own runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pyarrow.compute as pc

from lambdarec import privacy
from lambdarec.lake import Lake, delta_transaction, spark_path
from lambdarec.pseudonym import spark_pseudonym
from schemas.tables import (
    DEAD_LETTER,
    EVENTS,
    MODEL_INTERACTIONS,
    PRIVACY_REQUESTS,
    SPEED_USER_FEATURES,
    SPEED_USER_INTERACTIONS,
    USER_FACTORS,
    USER_CONSENT,
    USER_IDS,
    USER_PROFILES,
    TableSpec,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("lambdarec.erasure")

TABLES: tuple[TableSpec, ...] = (EVENTS, DEAD_LETTER, SPEED_USER_INTERACTIONS, SPEED_USER_FEATURES, USER_CONSENT,
                                 USER_PROFILES, MODEL_INTERACTIONS, USER_FACTORS, USER_IDS)
"""Every table that holds a user, in the order their rows go: ``model_interactions`` holds the user by
their index, which their ``user_factors`` and ``user_ids`` rows give, so it goes before those."""
CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
             "ConcurrentTransactionException", "MetadataChangedException", "ConcurrentWriteException")


def app_id(request_id: str, spec: TableSpec) -> str:
    return f"erasure-{request_id}-{spec.name}"


def done(lake: Lake, request_id: str, spec: TableSpec) -> tuple[int, int] | None:
    """(version, rows deleted) of the table's erasure commit for the request, if there is one."""
    entry = lake.commit_entry(spec, app_id(request_id, spec), 0)
    if entry is None:
        return None
    return entry["version"], int((entry.get("operationMetrics") or {}).get("numTargetRowsDeleted", 0))


def erase_rows(spark: "SparkSession", lake: Lake, request: privacy.ErasureRequest, spec: TableSpec) -> tuple[int, int] | None:
    """Delete the request's user from ``spec`` unless done; (version, rows), or None when a concurrent
    writer won the race (try again) or the table does not exist."""
    if not lake.exists(spec):
        return None
    found = done(lake, request.request_id, spec)
    if found is not None:
        return found
    from delta.tables import DeltaTable

    session = spark.newSession()  # the app transaction is session conf: keep it off the caller's other writes
    source, condition = _source(session, lake, request, spec)
    try:
        with delta_transaction(session, app_id(request.request_id, spec), 0):
            (DeltaTable.forPath(session, spark_path(lake.uri(spec))).alias("t")
             .merge(source.alias("s"), condition).whenMatchedDelete().execute())
    except Exception as exc:  # delta's concurrency errors come through py4j under these names
        if type(exc).__name__ not in CONFLICTS:
            raise
        log.info("erasure of %s lost a race with a concurrent commit; retrying later", spec.name)
        return None
    return done(lake, request.request_id, spec)


def _source(spark: "SparkSession", lake: Lake, request: privacy.ErasureRequest, spec: TableSpec) -> tuple["DataFrame", str]:
    """The MERGE's source (the user, or the keys of their rows) and its condition."""
    from pyspark.sql import functions as F

    pseudonym = request.user_id
    assert pseudonym is not None, "a request whose pseudonym is nulled has deleted its rows; done() finds them"
    if spec is EVENTS:  # an event sent after the request is the user's new life, and stays
        subject = spark.createDataFrame([(pseudonym, list(request.events_end_offsets.items()))],
                                        "user_id string, ends array<struct<p:int,o:bigint>>")
        return (subject.select("user_id", F.map_from_entries("ends").alias("ends")),
                "t.user_id = s.user_id AND (t.kafka_partition IS NULL OR "
                "t.kafka_offset < coalesce(element_at(s.ends, t.kafka_partition), 0))")
    if spec is DEAD_LETTER:
        return (_dead_letters(spark, lake, pseudonym), "t.kafka_topic <=> s.kafka_topic AND "
                "t.kafka_partition <=> s.kafka_partition AND t.kafka_offset <=> s.kafka_offset")
    if spec is MODEL_INTERACTIONS:  # by index: the user's in each model's factors, and in the id map (EASE)
        only = pc.field("user_id") == pseudonym
        pairs = {(r["model_version"], r["user_index"]) for r in lake.read_arrow(USER_FACTORS, filter=only).select(
            ["model_version", "user_index"]).to_pylist()}
        pairs |= {(None, index) for index in lake.read_arrow(USER_IDS, filter=only).column("user_index").to_pylist()}
        return (spark.createDataFrame(sorted(pairs, key=str), "model_version bigint, user_index int"),
                "t.user_index = s.user_index AND (s.model_version IS NULL OR t.model_version = s.model_version)")
    return spark.createDataFrame([(pseudonym,)], "user_id string"), "t.user_id = s.user_id"


def _dead_letters(spark: "SparkSession", lake: Lake, pseudonym: str) -> "DataFrame":
    """Keys of the dead letters that hold the user: the pseudonym anywhere in the raw bytes, or a
    ``user_id`` field that is the pseudonym or a raw id whose pseudonym it is."""
    from pyspark.sql import functions as F

    text = F.col("raw").cast("string")
    field = F.get_json_object(text, "$.user_id")
    match = (F.instr(text, pseudonym) > 0) | (field == pseudonym) | (
        spark_pseudonym(field, lake.settings.pseudonym_key) == pseudonym)
    return lake.read_spark(spark, DEAD_LETTER).filter(match).select("kafka_topic", "kafka_partition", "kafka_offset")


class ReadyErasures:
    """For a speed sink: the erasures whose rows it should delete, re-read only when ``privacy_requests`` changed."""

    def __init__(self, lake: Lake, specs: tuple[TableSpec, ...]):
        self.lake = lake
        self.specs = specs
        self._version: int | None = None
        self._ready: list[privacy.ErasureRequest] = []

    def apply(self, spark: "SparkSession") -> None:
        """Delete, in this sink's tables, the rows of every ready erasure not yet deleted there."""
        version = self.lake.version(PRIVACY_REQUESTS)
        if version != self._version:
            self._version = version
            self._ready = privacy.ready(self.lake) if version is not None else []
        self._ready = [request for request in self._ready
                       if None in [erase_rows(spark, self.lake, request, spec) for spec in self.specs]]
