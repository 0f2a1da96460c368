"""Delta table specs: name, columns, partitioning and keys for every lake table.

The pyarrow schema is the single source: the Delta schema is created from it, and
Spark writers select and cast to it (``lambdarec.lake.spark_schema``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
FACTORS = pa.list_(pa.float32())


@dataclass(frozen=True)
class TableSpec:
    """A Delta table's contract."""

    name: str
    schema: pa.Schema
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = field(default=())
    description: str = ""
    identifying: tuple[str, ...] = field(default=())
    """Columns that identify a user. They are kept out of Delta's per-file statistics, whose min and
    max values the transaction log would keep after an erasure removed the rows."""
    change_data_feed: bool = False
    """Delta's change data feed on (``delta.enableChangeDataFeed``): every row change stays queryable."""

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    @property
    def stats_columns(self) -> list[str] | None:
        """The columns Delta keeps statistics for (``delta.dataSkippingStatsColumns``); None = Delta's default."""
        if not self.identifying:
            return None
        simple = (pa.types.is_string, pa.types.is_integer, pa.types.is_floating, pa.types.is_timestamp,
                  pa.types.is_date)
        return [f.name for f in self.schema if f.name not in self.identifying and any(t(f.type) for t in simple)]


EVENTS = TableSpec(
    name="events",
    description="Bronze: every valid, consented event exactly once (the system of record).",
    keys=("event_id",),
    partition_by=("event_date",),
    identifying=("user_id",),
    schema=pa.schema(
        [
            ("event_id", pa.string()),
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("event_type", pa.string()),
            ("value", pa.float64()),
            ("occurred_at", TS),
            ("received_at", TS),
            ("device", pa.string()),
            ("country", pa.string()),
            ("context", pa.map_(pa.string(), pa.string())),
            ("kafka_topic", pa.string()),
            ("kafka_partition", pa.int32()),
            ("kafka_offset", pa.int64()),
            ("event_date", pa.date32()),
        ]
    ),
)

DEAD_LETTER = TableSpec(
    name="dead_letter",
    description="Records the speed layer could not accept, with the raw bytes and the reason.",
    keys=("kafka_topic", "kafka_partition", "kafka_offset"),
    identifying=("raw",),
    schema=pa.schema(
        [
            ("raw", pa.binary()),
            ("reason", pa.string()),
            ("kafka_topic", pa.string()),
            ("kafka_partition", pa.int32()),
            ("kafka_offset", pa.int64()),
            ("recorded_at", TS),
        ]
    ),
)

SPEED_USER_INTERACTIONS = TableSpec(
    name="speed_user_interactions",
    description="Speed view: per-user interactions with their implicit weight, per micro-batch.",
    keys=("event_id",),
    identifying=("user_id",),
    schema=pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("event_type", pa.string()),
            ("weight", pa.float64()),
            ("occurred_at", TS),
            ("event_id", pa.string()),
            ("events_version", pa.int64()),
            ("query_id", pa.string()),
            ("batch_id", pa.int64()),
        ]
    ),
)

SPEED_USER_FEATURES = TableSpec(
    name="speed_user_features",
    description=(
        "Speed view: per-user stateful features as a changelog; a user's current row is the one "
        "with the greatest (batch_id) for the newest query."
    ),
    keys=("user_id", "query_id", "batch_id"),
    identifying=("user_id",),
    schema=pa.schema(
        [
            ("user_id", pa.string()),
            ("last_seen", TS),
            ("session_id", pa.string()),
            ("session_start", TS),
            ("session_events", pa.int64()),
            ("counts_1h", pa.map_(pa.string(), pa.int64())),
            ("counts_24h", pa.map_(pa.string(), pa.int64())),
            ("categories_1h", pa.map_(pa.string(), pa.int64())),
            ("categories_24h", pa.map_(pa.string(), pa.int64())),
            ("country", pa.string()),
            ("device", pa.string()),
            ("query_id", pa.string()),
            ("batch_id", pa.int64()),
        ]
    ),
)

SPEED_ITEM_TRENDING = TableSpec(
    name="speed_item_trending",
    description=(
        "Speed view: item counts per minute (window_start to window_end), globally (segment_type "
        "'global', segment '*') and per segment (segment_type 'country' or 'device', segment 'DE'), "
        "as a changelog: the newest batch_id per (segment_type, segment, window_start, item_id) "
        "holds the minute's count; trending over a window sums an item's minutes in it "
        "(schemas.speed_updates)."
    ),
    keys=("segment_type", "segment", "window_start", "item_id", "query_id", "batch_id"),
    schema=pa.schema(
        [
            ("segment_type", pa.string()),
            ("segment", pa.string()),
            ("window_start", TS),
            ("window_end", TS),
            ("item_id", pa.string()),
            ("events", pa.int64()),
            ("weight", pa.float64()),
            ("query_id", pa.string()),
            ("batch_id", pa.int64()),
        ]
    ),
)

SPEED_PROGRESS = TableSpec(
    name="speed_progress",
    description="One row per speed micro-batch from the StreamingQueryListener: rates, durations, lag, watermark.",
    keys=("query_id", "batch_id"),
    schema=pa.schema(
        [
            ("query_id", pa.string()),
            ("query_name", pa.string()),
            ("run_id", pa.string()),
            ("batch_id", pa.int64()),
            ("recorded_at", TS),
            ("rows_in", pa.int64()),
            ("input_rows_per_s", pa.float64()),
            ("processed_rows_per_s", pa.float64()),
            ("batch_duration_ms", pa.int64()),
            ("source_lag", pa.int64()),
            ("watermark", TS),
        ]
    ),
)

SPEED_HORIZON_COLUMNS: dict[str, str] = {
    SPEED_USER_INTERACTIONS.name: "occurred_at",
    SPEED_USER_FEATURES.name: "last_seen",
    SPEED_ITEM_TRENDING.name: "window_end",
    SPEED_PROGRESS.name: "recorded_at",
}
"""Each speed table's time column: the maintenance job prunes rows older than the speed view's horizon
by it, and serving's start-up loads only rows within the horizon by it (``speed_view_horizon_s``)."""

MODELS = TableSpec(
    name="models",
    description=(
        "Model registry as an append-only status log: one row per status change; "
        "a model's current status is its newest row."
    ),
    keys=("model_version", "status"),
    schema=pa.schema(
        [
            ("model_version", pa.int64()),
            ("status", pa.string()),
            ("status_reason", pa.string()),
            ("recorded_at", TS),
            ("source_events_version", pa.int64()),
            ("engine", pa.string()),
            ("params", pa.string()),
            ("metrics", pa.string()),
            ("n_users", pa.int64()),
            ("n_items", pa.int64()),
            ("n_interactions", pa.int64()),
        ]
    ),
)

USER_FACTORS = TableSpec(
    name="user_factors",
    description="A model's users, with their ALS vectors (an empty vector for a model without latent "
    "factors, such as EASE).",
    keys=("model_version", "user_id"),
    partition_by=("model_version",),
    identifying=("user_id",),
    schema=pa.schema(
        [
            ("model_version", pa.int64()),
            ("user_index", pa.int32()),
            ("user_id", pa.string()),
            ("factors", FACTORS),
        ]
    ),
)

ITEM_FACTORS = TableSpec(
    name="item_factors",
    description="A model's items, with their ALS vectors (an empty vector for a model without latent "
    "factors, such as EASE).",
    keys=("model_version", "item_id"),
    partition_by=("model_version",),
    schema=pa.schema(
        [
            ("model_version", pa.int64()),
            ("item_index", pa.int32()),
            ("item_id", pa.string()),
            ("factors", FACTORS),
        ]
    ),
)

ITEM_NEIGHBOURS = TableSpec(
    name="item_neighbours",
    description="An item-item model's weights (EASE's B) per model version: one row per item with the "
    "items it scores and how much.",
    keys=("model_version", "item_index"),
    partition_by=("model_version",),
    schema=pa.schema(
        [
            ("model_version", pa.int64()),
            ("item_index", pa.int32()),
            ("neighbours", pa.list_(pa.int32())),  # item indexes
            ("weights", pa.list_(pa.float32())),
        ]
    ),
)

MODEL_INTERACTIONS = TableSpec(
    name="model_interactions",
    description="The (user, item, implicit rating) rows a model was trained on, for fold-in and exclusion.",
    keys=("model_version", "user_index", "item_index"),
    partition_by=("model_version",),
    schema=pa.schema(
        [
            ("model_version", pa.int64()),
            ("user_index", pa.int32()),
            ("item_index", pa.int32()),
            ("rating", pa.float32()),
        ]
    ),
)

USER_IDS = TableSpec(
    name="user_ids",
    description="Stable user_id -> user_index mapping, append-only across training runs.",
    keys=("user_id",),
    identifying=("user_id",),
    schema=pa.schema(
        [("user_id", pa.string()), ("user_index", pa.int32()), ("first_model_version", pa.int64())]
    ),
)

ITEM_IDS = TableSpec(
    name="item_ids",
    description="Stable item_id -> item_index mapping, append-only across training runs.",
    keys=("item_id",),
    schema=pa.schema(
        [("item_id", pa.string()), ("item_index", pa.int32()), ("first_model_version", pa.int64())]
    ),
)

ITEM_CATALOGUE = TableSpec(
    name="item_catalogue",
    description=(
        "The shop's items as the operational database has them, one row per item, kept by CDC "
        "(speed.dimensions: a Delta MERGE per change, newest LSN wins; change data feed on). "
        "Filters match its attributes and category; an unavailable item is not recommended. A "
        "deleted item keeps its row, marked deleted and unavailable, so that serving still knows "
        "not to recommend what the model learned about it."
    ),
    keys=("item_id",),
    change_data_feed=True,
    schema=pa.schema(
        [
            ("item_id", pa.string()),
            ("attributes", pa.map_(pa.string(), pa.string())),
            ("updated_at", TS),
            ("title", pa.string()),
            ("category", pa.string()),
            ("price", pa.float64()),
            ("available", pa.bool_()),
            ("source_lsn", pa.int64()),  # the Postgres LSN of the change this row holds (null: imported)
            ("deleted", pa.bool_()),  # true: deleted in the operational database (null/false: live)
        ]
    ),
)

USER_PROFILES = TableSpec(
    name="user_profiles",
    description=(
        "Users' profiles from the operational database, one row per user under their pseudonym, kept "
        "by CDC like item_catalogue (the raw id never reaches the lake)."
    ),
    keys=("user_id",),
    identifying=("user_id",),
    change_data_feed=True,
    schema=pa.schema(
        [
            ("user_id", pa.string()),
            ("country", pa.string()),
            ("age_band", pa.string()),
            ("signup_date", pa.date32()),
            ("membership", pa.string()),
            ("updated_at", TS),
            ("source_lsn", pa.int64()),
        ]
    ),
)

PRIVACY_REQUESTS = TableSpec(
    name="privacy_requests",
    description=(
        "Privacy requests as received, recorded before they are acknowledged (lambdarec.privacy): "
        "the subject's pseudonym is kept only while the request is pending and nulled once it completes."
    ),
    keys=("request_id",),
    identifying=("user_id",),
    schema=pa.schema(
        [
            ("request_id", pa.string()),
            ("kind", pa.string()),  # "erasure", or the erasure job's "speed_state_erasure" marker
            ("subject_hash", pa.string()),  # one-way hash of the pseudonym (lambdarec.privacy.subject_hash)
            ("user_id", pa.string()),  # the pseudonym; null once the request completed
            ("requested_at", TS),
            ("events_end_offsets", pa.map_(pa.int32(), pa.int64())),  # the events topic's end per partition
            ("source", pa.string()),  # "api", "cli", or "consent" (a withdrawal, with erasure_on_withdrawal)
        ]
    ),
)

ERASURE_PLACE = pa.struct(
    [
        ("place", pa.string()),  # e.g. lake:events, speed_state, serving, kafka:<topic>, operational_db, models
        ("status", pa.string()),  # batch.erasure_places: removed, expires, operator, kept, not_held
        ("gone_by", TS),  # when it is (or will be) gone; null when only an action or nothing bounds it
        ("after", pa.string()),  # for status operator: the action the time counts from
        ("within_ms", pa.int64()),  # for status operator: gone within this long of that action
        ("detail", pa.string()),  # what was checked, and what the time comes from
    ]
)
"""One place an erased user's data was, in their receipt."""

PRIVACY_RECEIPTS = TableSpec(
    name="privacy_receipts",
    description=(
        "One receipt per completed erasure: what each layer removed and the Delta versions that prove it; "
        "keyed by a one-way hash of the pseudonym, never by an id."
    ),
    keys=("request_id",),
    schema=pa.schema(
        [
            ("request_id", pa.string()),
            ("subject_hash", pa.string()),
            ("received_at", TS),
            ("completed_at", TS),
            ("removed", pa.map_(pa.string(), pa.int64())),  # rows removed per table, plus speed_state
            ("delete_versions", pa.map_(pa.string(), pa.int64())),  # table -> version of its DELETE
            ("vacuum_versions", pa.map_(pa.string(), pa.int64())),  # table -> version of its VACUUM END
            ("vacuum_retention_hours", pa.int64()),
            ("kafka_expires_by", TS),  # the last copy on any topic holding the pseudonym is gone by then
            ("places", pa.list_(ERASURE_PLACE)),  # every place that held the user, and when it is gone
        ]
    ),
)

USER_CONSENT = TableSpec(
    name="user_consent",
    description=(
        "Every consent change read from the consent topic (schemas.consent), once each: the speed job's "
        "consent state, which it rebuilds from here after a restart, and each user's consent history."
    ),
    keys=("change_id",),
    identifying=("user_id",),
    schema=pa.schema(
        [
            ("change_id", pa.string()),
            ("user_id", pa.string()),
            ("purpose", pa.string()),
            ("granted", pa.bool_()),
            ("changed_at", TS),
            ("source", pa.string()),
            ("kafka_partition", pa.int32()),
            ("kafka_offset", pa.int64()),
            ("kafka_timestamp", TS),  # what "later than the change" is measured against
        ]
    ),
)

API_KEYS = TableSpec(
    name="api_keys",
    description=(
        "Serving's API keys as an append-only log (lambdarec.api_keys): a 'create' row per key with its name, "
        "scopes and the SHA-256 of its token (never the token), and a 'revoke' row when it is revoked. A key is "
        "live from its create row until its revoke row."
    ),
    keys=("key_id", "change"),
    schema=pa.schema(
        [
            ("key_id", pa.string()),
            ("change", pa.string()),  # "create" or "revoke"
            ("at", TS),
            ("name", pa.string()),
            ("scopes", pa.list_(pa.string())),
            ("token_sha256", pa.string()),  # hex; null on a revoke row
        ]
    ),
)

AUDIT_LOG = TableSpec(
    name="audit_log",
    description=(
        "One row per admin or data-access action (consent change, erasure, export, reload, key change): who "
        "(the API key's id, or the command line), what, on whom and how it ended (lambdarec.audit). The subject "
        "is the one-way subject hash (lambdarec.privacy.subject_hash), never a raw id or a pseudonym."
    ),
    keys=("audit_id",),
    schema=pa.schema(
        [
            ("audit_id", pa.string()),
            ("at", TS),
            ("key_id", pa.string()),  # the key the request presented; null from the command line or in open mode
            ("source", pa.string()),  # "api" or "cli"
            ("action", pa.string()),
            ("subject", pa.string()),  # subject hash; null for actions on no user (reload, key changes)
            ("outcome", pa.string()),
            ("detail", pa.string()),
        ]
    ),
)

PSEUDONYM_KEYS = TableSpec(
    name="pseudonym_keys",
    description=(
        "The fingerprint of each pseudonym key version this lake's pseudonyms were made with, recorded on the "
        "key's first use (lambdarec.key_fingerprint): every command that pseudonymises refuses a key whose "
        "fingerprint differs. A fingerprint is an HMAC under the key, never the key."
    ),
    keys=("key_version",),
    schema=pa.schema(
        [
            ("key_version", pa.int32()),
            ("fingerprint", pa.string()),
            ("recorded_at", TS),
            ("recorded_by", pa.string()),  # the command that used the key first: serving, speed, erase …
        ]
    ),
)

ALL_TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        EVENTS,
        DEAD_LETTER,
        SPEED_USER_INTERACTIONS,
        SPEED_USER_FEATURES,
        SPEED_ITEM_TRENDING,
        SPEED_PROGRESS,
        MODELS,
        USER_FACTORS,
        ITEM_FACTORS,
        ITEM_NEIGHBOURS,
        MODEL_INTERACTIONS,
        ITEM_CATALOGUE,
        USER_PROFILES,
        USER_IDS,
        ITEM_IDS,
        PRIVACY_REQUESTS,
        PRIVACY_RECEIPTS,
        USER_CONSENT,
        PSEUDONYM_KEYS,
        API_KEYS,
        AUDIT_LOG,
    )
}
