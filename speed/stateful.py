"""The features query's stream: accepted interactions → keyed Spark state → feature rows.

It streams the Delta ``events`` table (delta-spark's streaming source, its
position in the checkpoint), whose rows the events query committed exactly once
(valid, consented, deduplicated, not late), so the features equal a
recomputation from ``events`` and need no dedupe of their own. State lives in the RocksDB state store, one value
per entity (a user, or an item in a segment), expiring after ``speed_state_ttl_s``
idle (``transformWithState`` TTL). A user's state is keyed by their subject hash
(``lambdarec.privacy.subject_hash``), never their pseudonym: RocksDB keeps keys
beyond their deletion (SST and MANIFEST file boundaries), so an erased user's
pseudonym must never be one; their rows carry the pseudonym for the output. An
erasure reaches the processor as a marker row streamed from ``privacy_requests``
(``lambdarec.privacy``), in the same checkpointed stream as the events, so a
cleared state stays cleared after a restart. The row-based API, not the pandas one: per
entity, pandas frames in and out cost more than the state itself (README: measurements).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pyspark.sql import Row
from pyspark.sql.streaming.stateful_processor import StatefulProcessor, StatefulProcessorHandle

from lambdarec.lake import Lake
from lambdarec.privacy import SPEED_STATE_ERASURE, spark_subject_hash
from lambdarec.settings import Settings
from schemas.speed_updates import GLOBAL_SEGMENT, MAP_FIELDS, SEGMENT_AGE_BAND, SEGMENT_ATTRIBUTES
from schemas.tables import EVENTS, ITEM_CATALOGUE, PRIVACY_REQUESTS, USER_PROFILES
from speed import features
from speed.transforms import to_user_interactions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SEP = "\x1f"
OUTPUT_SCHEMA = (
    "kind string, user_id string, last_seen long, session_id string, session_start long, session_events long, "
    "counts_1h string, counts_24h string, categories_1h string, categories_24h string, country string, device string, segment_type string, segment string, "
    "window_start long, window_end long, item_id string, events long, weight double"
)
OUTPUT_COLUMNS = [part.strip().split(" ")[0] for part in OUTPUT_SCHEMA.split(",")]


def interactions(spark: "SparkSession", settings: Settings) -> "DataFrame":
    """The ``events`` table as a stream of weighted interactions (``occurred_at`` in µs).

    Commits that only rewrite files (OPTIMIZE) carry no new data; commits that
    change existing rows (an erasure's DELETE) are skipped, not replayed.
    """
    from pyspark.sql import functions as F

    events = (spark.readStream.format("delta").option("skipChangeCommits", "true")
              .load(Lake(settings).uri(EVENTS)))
    rows = to_user_interactions(events, settings).withColumn("occurred_at", F.unix_micros("occurred_at"))
    return with_dimensions(rows, spark, settings)


def with_dimensions(rows: "DataFrame", spark: "SparkSession", settings: Settings) -> "DataFrame":
    """``rows`` with their user's ``age_band`` from ``user_profiles`` and their item's ``category`` from
    ``item_catalogue`` (null where unknown). In a stream these are stream-static joins: each
    micro-batch reads the tables' latest versions, so an event takes the attributes of its time."""
    from pyspark.sql import functions as F

    lake = Lake(settings)
    profiles = lake.read_spark(spark, USER_PROFILES).select("user_id", SEGMENT_AGE_BAND)
    catalogue = lake.read_spark(spark, ITEM_CATALOGUE).select("item_id", "category")
    return rows.join(F.broadcast(profiles), "user_id", "left").join(F.broadcast(catalogue), "item_id", "left")


def entity_rows(accepted: "DataFrame") -> "DataFrame":
    """Each interaction once per entity it updates: its user, and its item in each of its trending
    segments (``schemas.speed_updates.segments``: global, and per country, age band and device when known)."""
    from pyspark.sql import functions as F

    item = lambda segment_type, segment: F.concat_ws(SEP, F.lit("i"), segment_type, segment, "item_id")  # noqa: E731
    entities = F.array(
        F.concat_ws(SEP, F.lit("u"), spark_subject_hash(F.col("user_id"))),
        item(F.lit(GLOBAL_SEGMENT[0]), F.lit(GLOBAL_SEGMENT[1])),
        *[F.when(F.col(name).isNotNull() & (F.col(name) != ""), item(F.lit(name), F.col(name)))
          for name in SEGMENT_ATTRIBUTES],
    )
    return accepted.select(
        F.explode(F.filter(entities, lambda e: e.isNotNull())).alias("entity"),
        "user_id", "occurred_at", "event_type", "weight", "event_id", "country", "device", "category",
    )


def erasure_markers(spark: "SparkSession", settings: Settings) -> "DataFrame":
    """The erasure job's markers as ``entity_rows`` rows of the user (``event_type`` the marker kind,
    ``occurred_at`` the request time in µs). Nulling a done request's pseudonym is a change commit,
    skipped."""
    from pyspark.sql import functions as F

    requests = (spark.readStream.format("delta").option("skipChangeCommits", "true")
                .load(Lake(settings).uri(PRIVACY_REQUESTS)))
    none = F.lit(None).cast("string")
    return requests.filter((F.col("kind") == SPEED_STATE_ERASURE) & F.col("user_id").isNotNull()).select(
        F.concat_ws(SEP, F.lit("u"), spark_subject_hash(F.col("user_id"))).alias("entity"), "user_id",
        F.unix_micros("requested_at").alias("occurred_at"),
        F.col("kind").alias("event_type"), F.lit(None).cast("double").alias("weight"),
        F.col("request_id").alias("event_id"), none.alias("country"), none.alias("device"), none.alias("category"),
    )


def feature_rows(accepted: "DataFrame", settings: Settings, markers: "DataFrame | None" = None) -> "DataFrame":
    """Updated feature rows (``kind`` 'user' or 'item') for the entities a micro-batch touched;
    ``markers`` (``erasure_markers``) clear a user's state."""
    processor = FeatureProcessor(settings.speed_session_gap_s, settings.speed_trending_window_s,
                                 settings.speed_state_ttl_s * 1000)
    rows = entity_rows(accepted)
    if markers is not None:
        rows = rows.unionByName(markers)
    return rows.groupBy("entity").transformWithState(
        statefulProcessor=processor, outputStructType=OUTPUT_SCHEMA, outputMode="Update", timeMode="ProcessingTime"
    )


class FeatureProcessor(StatefulProcessor):
    """Folds an entity's new interactions into its state and emits its current feature row
    (a user's), or the rows of the minutes the interactions changed (an item's in a segment)."""

    def __init__(self, session_gap_s: int, window_s: int, ttl_ms: int):
        self.session_gap_s, self.window_s, self.ttl_ms = session_gap_s, window_s, ttl_ms

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.state = handle.getValueState("features", "state string", self.ttl_ms)

    def handleInputRows(self, key, rows: Iterator[Row], timerValues) -> Iterator[Row]:
        kind, *rest = key[0].split(SEP)
        events = [row.asDict() for row in rows]
        stored = self.state.get()  # None without state: one round trip to the state server, not two
        previous = json.loads(stored[0]) if stored else None
        if kind == "u":
            erased = [e["occurred_at"] for e in events if e["event_type"] == SPEED_STATE_ERASURE]
            if erased:  # forget the user; only events after the request start a new state
                events = [e for e in events if e["event_type"] != SPEED_STATE_ERASURE and e["occurred_at"] > max(erased)]
                if not events:
                    if previous is not None:  # clearing an absent state would write a deletion for nothing
                        self.state.clear()
                    return
                previous = None
            state = features.fold_user(previous or features.new_user(), events)
            row = {"kind": "user", **features.user_features(events[0]["user_id"], state, self.session_gap_s)}
            for name in MAP_FIELDS:
                row[name] = json.dumps(dict(row[name]))
        else:
            segment_type, segment, item_id = rest
            state = features.fold_item(previous or features.new_item(), events, self.window_s)
            self.state.update((json.dumps(state),))
            for minute in features.item_minutes((segment_type, segment), item_id, state,
                                                features.touched_minutes(events)):
                yield Row(**{column: {"kind": "item", **minute}.get(column) for column in OUTPUT_COLUMNS})
            return
        self.state.update((json.dumps(state),))
        yield Row(**{column: row.get(column) for column in OUTPUT_COLUMNS})
