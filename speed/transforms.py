"""Pure DataFrame transforms of the speed layer: Kafka records in, lake rows out.

Kept apart from reads and writes so tests can feed them static DataFrames and
the streaming job can compose them. Input is the Kafka source's schema
(key, value, topic, partition, offset, timestamp).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lambdarec.feedback import event_weight
from lambdarec.settings import Settings
from schemas.event_rules import (
    EventLimits,
    spark_interval,
    spark_occurred_at_problem,
    spark_text_problem,
    spark_value_problem,
)
from schemas.events import (
    CONSENT_KEY,
    CONSENT_REFUSED,
    CONTEXT_COLUMNS,
    CONTEXT_DROPPED,
    EVENT_TYPES,
    PSEUDONYM_PATTERN,
    RAW_USER_ID,
    REDACTED_USER_ID,
    SCHEMA_VERSION,
    spark_message_schema,
)
from schemas.speed_updates import INTERACTION_FIELDS, KIND_INTERACTION, SPARK_TIMESTAMP_PATTERN, TIMESTAMP_FIELDS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
REQUIRED_FIELDS = ("event_id", "user_id", "item_id", "event_type", "occurred_at")
LATE = "late_past_watermark"


def parse_records(records: "DataFrame", settings: Settings) -> "DataFrame":
    """Parse every record and attach ``reason`` (null when valid), ``dedupe_key`` and ``seen_at``.

    ``seen_at`` is ``current_timestamp()``, which a streaming query fixes per
    micro-batch in its offset log, so a replayed batch sees the same time.

    Invalid records keep a key unique to their Kafka position, so dedupe never
    merges two bad records; valid ones are keyed by event_id.
    """
    from pyspark.sql import functions as F

    text = F.col("value").cast("string")
    parsed = (
        records.withColumn("event", F.from_json(text, spark_message_schema()))
        .withColumn("seen_at", F.current_timestamp())
        .withColumn("ingest_ts", F.coalesce(F.col("timestamp"), F.col("seen_at")))
    )
    reason = _first_failure(parsed, settings)
    position = F.concat_ws("/", "topic", F.col("partition").cast("string"), F.col("offset").cast("string"))
    return (
        parsed.withColumn("reason", reason)
        .withColumn("dedupe_key", F.when(F.col("reason").isNull(), F.col("event.event_id")).otherwise(position))
    )


def _first_failure(parsed: "DataFrame", settings: Settings) -> "Column":
    """The first validation rule a record breaks, as a short machine-readable reason: the event
    schema's, then the pipeline's limits (``schemas.event_rules``, as the API edge applies them)."""
    from pyspark.sql import functions as F

    e = "event."
    occurred = F.col(e + "occurred_at")
    limits = settings.event_limits.at_broker()
    window = _outside_window(occurred.cast("timestamp"), limits)
    rules: list[tuple[Column, Column]] = [
        (F.col("value").isNull(), F.lit("empty_record")),
        (F.length("value") > settings.speed_max_record_bytes, F.lit("oversize")),
        (F.try_parse_json(F.col("value").cast("string")).isNull(), F.lit("malformed_json")),
        (
            F.col(e + "schema_version").isNotNull() & (F.col(e + "schema_version") != SCHEMA_VERSION),
            F.concat(F.lit("unsupported_schema_version:"), F.col(e + "schema_version").cast("string")),
        ),
    ]
    rules += [(F.col(e + name).isNull(), F.lit(f"missing_field:{name}")) for name in REQUIRED_FIELDS]
    rules += [
        (~F.col(e + "event_id").rlike(UUID_PATTERN), F.lit("invalid_field:event_id")),
        (_bad_id(F.col(e + "user_id")), F.lit("invalid_field:user_id")),
        (_bad_id(F.col(e + "item_id")) | spark_text_problem(F.col(e + "item_id")), F.lit("invalid_field:item_id")),
        (spark_value_problem(F.col(e + "value"), limits), F.lit("invalid_field:value")),
        (
            ~F.col(e + "event_type").isin(*EVENT_TYPES),
            F.concat(F.lit("unknown_event_type:"), F.col(e + "event_type")),
        ),
        (
            ~occurred.rlike(RFC3339_PATTERN) | occurred.cast("timestamp").isNull(),
            F.lit("invalid_field:occurred_at"),
        ),
        (window.isNotNull(), window),
        (
            F.col(e + "context")["country"].isNotNull() & ~F.col(e + "context")["country"].rlike("^[A-Z]{2}$"),
            F.lit("invalid_field:context.country"),
        ),
        (spark_text_problem(_context_text(F.col(e + "context"))), F.lit("invalid_field:context")),
        (_raw_user_id(), F.lit(RAW_USER_ID)),
    ]
    reason = F.lit(None).cast("string")
    for condition, label in reversed(rules):
        reason = F.when(condition, label).otherwise(reason)
    return reason


def _bad_id(column: "Column") -> "Column":
    from pyspark.sql import functions as F

    return (F.length(column) < 1) | (F.length(column) > 128)


def _outside_window(occurred: "Column", limits: EventLimits) -> "Column":
    """``occurred_at_too_old`` or ``occurred_at_in_future``, or null: the edge's window, its past bound
    counted from the record's Kafka timestamp (so a job that reads late refuses nothing the edge took),
    held between the oldest time the topic can hold and now, so a producer's own choice of timestamp
    cannot move it; its future bound counted from this job's clock."""
    from pyspark.sql import functions as F

    received = F.least(F.col("seen_at"), F.col("ingest_ts"))
    if limits.max_age is not None:
        received = F.greatest(received, F.col("seen_at") - spark_interval(limits.max_age))
    return spark_occurred_at_problem(occurred, received, limits, now=F.col("seen_at"))


def _context_text(context: "Column") -> "Column":
    """A context map's keys and values as one text (space-separated: a space neither composes nor
    reorders in NFC, so the text breaks the text rule exactly when one of its parts does)."""
    from pyspark.sql import functions as F

    return F.concat_ws(" ", F.array_join(F.map_keys(context), " "), F.array_join(F.map_values(context), " "))


def _raw_user_id() -> "Column":
    """The record's user id is not a pseudonym: it was written to Kafka past the API's pseudonymisation."""
    from pyspark.sql import functions as F

    user = F.col("event.user_id")
    return user.isNotNull() & ~user.rlike(PSEUDONYM_PATTERN)


def _redacted_value() -> "Column":
    """The record's bytes, but with a raw user id replaced by ``REDACTED_USER_ID``: in place where the
    id appears as written, else (odd escaping) the parsed record re-serialised without it."""
    from pyspark.sql import functions as F

    user, text = F.col("event.user_id"), F.col("value").cast("string")
    quoted = F.concat(F.lit('"user_id"\\s*:\\s*"\\Q'), user, F.lit('\\E"'))
    replaced = F.regexp_replace(text, quoted, F.lit(f'"user_id":"{REDACTED_USER_ID}"'))
    in_place = ~user.contains("\\") & (replaced != text) & (F.instr(replaced, user) == 0)
    rebuilt = F.to_json(F.col("event").withField("user_id", F.lit(REDACTED_USER_ID)))
    redacted = F.when(in_place, replaced).otherwise(rebuilt).cast("binary")
    return F.when(_raw_user_id(), redacted).otherwise(F.col("value"))


def consented(parsed: "DataFrame") -> "DataFrame":
    """Drop valid events whose context says the user gave no consent; they reach no table."""
    from pyspark.sql import functions as F

    consent = F.lower(F.col("event.context")[CONSENT_KEY])
    return parsed.filter(F.col("reason").isNotNull() | consent.isNull() | (consent != CONSENT_REFUSED))


def _event_columns() -> list["Column"]:
    """Columns of an ``events`` row, computed from a parsed record.

    The Spark spelling of ``schemas.events.event_row``, from its constants; the
    contract test ``tests/spark/test_event_row_contract.py`` holds the two together.
    ``from_json`` already reads every context value as text, as ``context_text`` does.
    """
    from pyspark.sql import functions as F

    occurred = F.col("event.occurred_at").cast("timestamp")
    context = F.map_filter("event.context", lambda k, _: ~k.isin(*CONTEXT_DROPPED))
    return [
        F.col("event.event_id").alias("event_id"),
        F.col("event.user_id").alias("user_id"),
        F.col("event.item_id").alias("item_id"),
        F.col("event.event_type").alias("event_type"),
        F.col("event.value").alias("value"),
        occurred.alias("occurred_at"),
        F.coalesce(F.col("event.received_at").cast("timestamp"), F.col("ingest_ts")).alias("received_at"),
        *[F.col("event.context")[name].alias(name) for name in CONTEXT_COLUMNS],
        context.alias("context"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.to_date(occurred).alias("event_date"),
    ]


def to_events(parsed: "DataFrame") -> "DataFrame":
    """Valid records as rows of the ``events`` table."""
    from pyspark.sql import functions as F

    return parsed.filter(F.col("reason").isNull()).select(*_event_columns())


def _dead_letter_columns() -> list["Column"]:
    """Columns of a ``dead_letter`` row, computed from a parsed record."""
    from pyspark.sql import functions as F

    return [
        _redacted_value().alias("raw"),
        F.col("reason"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("seen_at").alias("recorded_at"),
    ]


def to_dead_letters(parsed: "DataFrame") -> "DataFrame":
    """Invalid records as rows of the ``dead_letter`` table, raw bytes kept."""
    from pyspark.sql import functions as F

    return parsed.filter(F.col("reason").isNotNull()).select(*_dead_letter_columns())


def late_reason(cutoff_us: int | None) -> "Column":
    """``reason``, with ``late_past_watermark`` for valid records whose Kafka timestamp is before ``cutoff_us``."""
    from pyspark.sql import functions as F

    if cutoff_us is None:
        return F.col("reason")
    before = F.col("ingest_ts") < F.timestamp_micros(F.lit(cutoff_us))
    return F.when(F.col("reason").isNull() & before, F.lit(LATE)).otherwise(F.col("reason"))


def to_sink_rows(parsed: "DataFrame", settings: Settings) -> "DataFrame":
    """Everything one micro-batch writes, as one DataFrame, so the sink needs one Spark action.

    Each record carries its ``events`` row, its ``dead_letter`` row, its implicit
    weight and its Kafka timestamp; the sink marks late records and splits them
    by ``reason`` in Arrow. One action also means the stateful dedupe above runs
    once per batch.
    """
    from pyspark.sql import functions as F

    return parsed.select(
        F.col("reason"),
        F.col("ingest_ts"),
        F.struct(*_event_columns()).alias("event_row"),
        F.struct(*_dead_letter_columns()).alias("dead_row"),
        implicit_weight(F.col("event.event_type"), F.col("event.value"), settings).alias("weight"),
    )


def implicit_weight(event_type: "Column", value: "Column", settings: Settings) -> "Column":
    """The event's implicit weight exactly as training computes it (no time decay: it is fresh)."""
    return event_weight(event_type, value, settings.event_weights, settings.rating_center)


def to_user_interactions(events: "DataFrame", settings: Settings) -> "DataFrame":
    """Per-user interactions with their implicit weight (a rating weighs its value).

    Event types without a configured weight carry no implicit signal, as in the
    batch layer, so they are left out here too, as are events whose value breaks the
    value rule (``schemas.event_rules``: rows landed before it), so every weight is finite.
    """
    from pyspark.sql import functions as F

    weight = implicit_weight(F.col("event_type"), F.col("value"), settings)
    return events.filter(~spark_value_problem(F.col("value"), settings.event_limits)).select(
        "user_id", "item_id", "event_type", weight.alias("weight"), "occurred_at", "event_id", *CONTEXT_COLUMNS,
        "received_at",
    ).filter(F.col("weight").isNotNull())


def interaction_messages(rows: "DataFrame", events_version: "Column | None" = None) -> "DataFrame":
    """``speed-updates`` records (key: user id, value: one ``interaction`` message) for the Kafka sink.

    The message is ``schemas.speed_updates``' ``interaction``, built with Spark functions:
    the contract's field names, its timestamp text (the session is UTC).

    ``rows`` has the columns of ``to_user_interactions``. The real-time query sends
    them without ``events_version`` (not yet in Delta); the events query sends the
    same event again with the ``events`` version that holds it, which tells serving
    when a model trained on that version already has it.
    """
    from pyspark.sql import functions as F

    fields = [F.lit(KIND_INTERACTION).alias("kind")] + [
        F.date_format(name, SPARK_TIMESTAMP_PATTERN).alias(name) if name in TIMESTAMP_FIELDS else F.col(name)
        for name in (*INTERACTION_FIELDS, "received_at")
    ]
    if events_version is not None:
        fields.append(events_version.alias("events_version"))
    return rows.select(F.col("user_id").cast("binary").alias("key"), F.to_json(F.struct(*fields)).alias("value"))


def realtime_interactions(parsed: "DataFrame", settings: Settings) -> "DataFrame":
    """Valid, consented records as ``to_user_interactions`` rows, with no state: what real-time mode allows."""
    from pyspark.sql import functions as F

    return to_user_interactions(to_events(consented(parsed)), settings).filter(F.col("weight").isNotNull())


def interval_seconds(text: str) -> float:
    """Seconds in a Spark-style interval such as ``"10 minutes"`` or ``"30 s"``."""
    number, _, unit = text.strip().partition(" ")
    unit = unit.strip().lower()
    unit = unit[:-1] if len(unit) > 2 and unit.endswith("s") else unit
    scale = {"ms": 0.001, "millisecond": 0.001, "s": 1, "second": 1, "min": 60, "minute": 60,
             "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
    if unit not in scale:
        raise ValueError(f"not an interval: {text!r} (use e.g. '10 minutes')")
    return float(number) * scale[unit]
