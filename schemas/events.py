"""Event schema v1: the JSON Schema file, its pydantic model and its Spark schema.

The JSON Schema file is the contract; the pydantic model (API edge) and the Spark
schema (speed layer) are written to match it and ``tests/unit/test_schemas.py``
checks that all three agree.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

EventType = Literal["view", "click", "add_to_cart", "purchase", "rating", "like", "share"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


@lru_cache
def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of event v1, as shipped in this package."""
    return json.loads(resources.files("schemas").joinpath("event_v1.json").read_text())


class EventContext(BaseModel):
    """Where the event happened; extra keys are allowed but must be short strings."""

    model_config = ConfigDict(extra="allow")

    device: str | None = Field(None, max_length=64)
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    consent: bool | None = None

    def model_post_init(self, __context: Any) -> None:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, str) or len(value) > 256:
                raise ValueError(f"context.{key} must be a string of at most 256 characters")


class Event(BaseModel):
    """One interaction, as clients send it to ``POST /events``."""

    model_config = ConfigDict(extra="forbid")

    event_id: uuid.UUID
    user_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=128)
    event_type: EventType
    value: float | None = None
    occurred_at: AwareDatetime
    context: EventContext = Field(default_factory=EventContext)

    def to_message(self, pseudonymous_user_id: str, received_at: datetime) -> dict[str, Any]:
        """The Kafka message for this event: the raw user id replaced by its pseudonym."""
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": str(self.event_id),
            "user_id": pseudonymous_user_id,
            "item_id": self.item_id,
            "event_type": self.event_type,
            "value": self.value,
            "occurred_at": self.occurred_at.isoformat(),
            "received_at": received_at.isoformat(),
            "context": self.context.model_dump(exclude_none=True),
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
