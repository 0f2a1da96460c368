"""Event schema v1: the JSON Schema file, its pydantic model and its Spark schema.

The JSON Schema file is the contract; the pydantic model (API edge) and the Spark
schema (speed layer) are written to match it and ``tests/unit/test_schemas.py``
checks that all three agree.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from schemas.event_rules import (
    OCCURRED_AT_IN_FUTURE,
    OCCURRED_AT_TOO_OLD,
    EventLimits,
    occurred_at_problem,
    text_problem,
    value_problem,
)

SCHEMA_VERSION = 1
PSEUDONYM_PATTERN = r"^u([2-9]|[1-9][0-9]+)?_[0-9a-f]{32}$"
"""What every pseudonym (``lambdarec.pseudonym``) looks like; a ``user_id`` on a topic that does not is a raw id."""
RAW_USER_ID = "raw_user_id"
"""The dead-letter reason of a record whose ``user_id`` is a raw id (written to Kafka past the API)."""
REDACTED_USER_ID = "[redacted]"
"""What a raw user id is replaced by in the dead-letter copy of the record."""

EventType = Literal["view", "click", "add_to_cart", "purchase", "rating", "like", "share"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
EVENT_NESTING = 2
"""JSON containers an event nests: the event object and its ``context`` (whose values are strings)."""


def _clean(text: str) -> str:
    problem = text_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


CleanText = Annotated[str, AfterValidator(_clean)]
"""Text the pipeline can carry (``schemas.event_rules.text_problem``). Where a length limit applies it goes
before the validator, ``Annotated[str, StringConstraints(...), AfterValidator(_clean)]``, to be checked as a string's."""


@lru_cache
def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of event v1, as shipped in this package."""
    return json.loads(resources.files("schemas").joinpath("event_v1.json").read_text())


class EventContext(BaseModel):
    """Where the event happened; extra keys are allowed but must be short strings."""

    model_config = ConfigDict(extra="allow")
    # Extra keys are validated as declared here, so an error names the key (``loc`` ends in it).
    __pydantic_extra__: dict[CleanText, Annotated[str, StringConstraints(max_length=256), AfterValidator(_clean)]]

    device: Annotated[str, StringConstraints(max_length=64), AfterValidator(_clean)] | None = None
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    consent: bool | None = None

    def present(self) -> dict[str, Any]:
        """The fields and extra keys that have a value: ``model_dump(exclude_none=True)`` without its
        per-call cost, which was the ingestion edge's largest share of a message's CPU."""
        values = {name: value for name, value in self.__dict__.items() if value is not None}
        if self.__pydantic_extra__:
            values.update((key, value) for key, value in self.__pydantic_extra__.items() if value is not None)
        return values


class Event(BaseModel):
    """One interaction, as clients send it to ``POST /events``."""

    model_config = ConfigDict(extra="forbid")

    event_id: uuid.UUID
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_clean)]
    item_id: Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_clean)]
    event_type: EventType
    # JSON has no NaN or Infinity, but Python's json module reads them: refuse them here.
    value: float | None = Field(None, allow_inf_nan=False)
    occurred_at: AwareDatetime
    context: EventContext = Field(default_factory=EventContext)

    def limit_problems(self, limits: EventLimits, now: datetime) -> list[tuple[str, str, Any]]:
        """(field, message, value) for each field outside ``limits`` at ``now`` (the edge's clock):
        the rules that depend on settings, which the model's own validation cannot know."""
        problems: list[tuple[str, str, Any]] = []
        if (value := value_problem(self.value, limits)) is not None:
            problems.append(("value", value, self.value))
        if (when := occurred_at_problem(self.occurred_at, now, limits)) is not None:
            problems.append(("occurred_at", _WINDOW_MESSAGES[when](limits), self.occurred_at.isoformat()))
        return problems

    def to_message(self, pseudonymous_user_id: str, received_at: str) -> dict[str, Any]:
        """The Kafka message for this event: the raw user id replaced by its pseudonym.

        ``received_at`` is ISO-8601 text, formatted once per request: ``isoformat()``
        costs as much as the rest of a message on this path."""
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": str(self.event_id),
            "user_id": pseudonymous_user_id,
            "item_id": self.item_id,
            "event_type": self.event_type,
            "value": self.value,
            "occurred_at": self.occurred_at.isoformat(),
            "received_at": received_at,
            "context": self.context.present(),
        }


_WINDOW_MESSAGES = {
    OCCURRED_AT_TOO_OLD: lambda limits: (
        "must be after 1970" + (f" and at most {limits.max_age.total_seconds():.0f} s old (the events topic's "
                                "retention)" if limits.max_age else "") + "; send history through `lambdarec import`"),
    OCCURRED_AT_IN_FUTURE: lambda limits: (
        f"must be at most {limits.max_skew.total_seconds():.0f} s ahead of the server's clock"),
}


def spark_message_schema():
    """Spark schema of a message on the ``events`` topic (event v1 plus edge metadata).

    ``context`` stays a string map: its extra keys are open-ended, and known keys are
    pulled out by the speed layer.
    """
    from pyspark.sql.types import (
        DoubleType,
        IntegerType,
        MapType,
        StringType,
        StructField,
        StructType,
    )

    return StructType(
        [
            StructField("schema_version", IntegerType()),
            StructField("event_id", StringType()),
            StructField("user_id", StringType()),
            StructField("item_id", StringType()),
            StructField("event_type", StringType()),
            StructField("value", DoubleType()),
            StructField("occurred_at", StringType()),
            StructField("received_at", StringType()),
            StructField("context", MapType(StringType(), StringType())),
        ]
    )


# --- One event message -> one ``events`` row (schemas.tables.EVENTS) ------------------------
#
# The speed layer (Spark expressions in ``speed/transforms.py``), the importer and the
# generator all write ``events`` rows; they share these constants, and the two Python
# writers share ``event_row``. ``tests/spark/test_event_row_contract.py`` checks that the
# Spark path and ``event_row`` give identical rows for the same messages.

CONTEXT_COLUMNS: tuple[str, ...] = ("device", "country")
"""Context keys lifted out into ``events`` columns of the same name."""

CONSENT_KEY = "consent"
CONSENT_REFUSED = "false"
"""A message whose ``context.consent`` reads ``false`` (any case) reaches no table."""

CONTEXT_DROPPED: tuple[str, ...] = (*CONTEXT_COLUMNS, CONSENT_KEY)
"""Context keys left out of the ``context`` map: the lifted columns, and consent (only valid rows are kept)."""


def context_text(value: Any) -> str | None:
    """A context value as the ``events`` string map holds it: strings as they are, other
    JSON values in their compact JSON spelling (``true``, ``3``), as Spark's ``from_json``
    reads a JSON value into a string map; null stays null."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def consented(context: dict[str, Any] | None) -> bool:
    """Whether a message's context allows it into the lake (no consent key means yes)."""
    consent = context_text((context or {}).get(CONSENT_KEY))
    return consent is None or consent.lower() != CONSENT_REFUSED


def _utc(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {value!r}")
    return parsed.astimezone(UTC)


def event_row(
    message: dict[str, Any],
    ingest_ts: datetime | None = None,
    kafka_topic: str | None = None,
    kafka_partition: int | None = None,
    kafka_offset: int | None = None,
) -> dict[str, Any]:
    """The ``events`` row of one valid, consented, pseudonymised message (``Event.to_message``).

    ``occurred_at``/``received_at`` may be ISO-8601 text (as on the topic) or aware
    datetimes; they become UTC. ``received_at`` falls back to ``ingest_ts`` (the Kafka
    record's timestamp in the speed layer). ``event_date`` is the UTC date of ``occurred_at``.
    The ``context`` map is a dict (null when the message has none, as in Spark); Arrow
    and Spark both take a dict as a map value.
    """
    given = message.get("context")
    context = given or {}
    occurred = _utc(message["occurred_at"])
    received = message.get("received_at")
    value = message.get("value")
    return {
        "event_id": message["event_id"],
        "user_id": message["user_id"],
        "item_id": message["item_id"],
        "event_type": message["event_type"],
        "value": None if value is None else float(value),
        "occurred_at": occurred,
        "received_at": _utc(received) if received is not None else ingest_ts,
        **{name: context_text(context.get(name)) for name in CONTEXT_COLUMNS},
        "context": None
        if given is None
        else {key: context_text(v) for key, v in context.items() if key not in CONTEXT_DROPPED},
        "kafka_topic": kafka_topic,
        "kafka_partition": kafka_partition,
        "kafka_offset": kafka_offset,
        "event_date": occurred.date(),
    }
