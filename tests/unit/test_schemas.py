"""The event contract: JSON Schema, pydantic model and Spark schema agree."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import jsonschema
import pytest
from pydantic import ValidationError

from schemas.events import EVENT_TYPES, Event, event_json_schema
from schemas.tables import ALL_TABLES

pytestmark = pytest.mark.unit

VALID = {
    "event_id": str(uuid.uuid4()),
    "user_id": "user-1",
    "item_id": "item-9",
    "event_type": "purchase",
    "value": 2.0,
    "occurred_at": "2026-11-26T10:00:00+01:00",
    "context": {"device": "ios", "country": "DE", "consent": True, "campaign": "winter"},
}

INVALID = [
    {"event_id": "nope"},
    {"user_id": ""},
    {"item_id": "x" * 129},
    {"event_type": "teleport"},
    {"occurred_at": "2026-11-26T10:00:00"},  # no timezone
    {"occurred_at": "yesterday"},
    {"context": {"country": "Germany"}},
    {"context": {"campaign": 5}},
    {"unexpected": 1},
]


def json_schema_accepts(payload: dict) -> bool:
    validator = jsonschema.Draft202012Validator(
        event_json_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return validator.is_valid(payload)


def pydantic_accepts(payload: dict) -> bool:
    try:
        Event.model_validate(payload)
    except ValidationError:
        return False
    return True


def test_valid_event_is_accepted_by_both():
    assert json_schema_accepts(VALID)
    assert pydantic_accepts(VALID)


@pytest.mark.parametrize("change", INVALID, ids=lambda c: ",".join(c))
def test_invalid_events_are_rejected_by_both(change):
    payload = {**VALID, **change}
    assert not json_schema_accepts(payload)
    assert not pydantic_accepts(payload)


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "event_type", "occurred_at"])
def test_required_fields_agree(field):
    payload = {k: v for k, v in VALID.items() if k != field}
    assert field in event_json_schema()["required"]
    assert not json_schema_accepts(payload)
    assert not pydantic_accepts(payload)


def test_event_types_agree():
    assert tuple(event_json_schema()["properties"]["event_type"]["enum"]) == EVENT_TYPES


def test_properties_agree():
    assert set(event_json_schema()["properties"]) == set(Event.model_fields)


def test_message_replaces_the_raw_user_id():
    event = Event.model_validate(VALID)
    message = event.to_message("u_pseudo", datetime(2026, 11, 26, tzinfo=UTC).isoformat())
    assert message["user_id"] == "u_pseudo"
    assert "user-1" not in str(message)
    assert message["schema_version"] == 1


@pytest.mark.parametrize("context", [{}, {"device": "web"}, {"country": "DE", "consent": False, "campaign": "x1"},
                                     {"device": None, "referrer": "mail", "consent": True}])
def test_a_messages_context_is_what_pydantic_dumps_without_nulls(context):
    event = Event.model_validate({**VALID, "context": context})
    message = event.to_message("u_pseudo", "2026-11-26T00:00:00+00:00")
    assert message["context"] == event.context.model_dump(exclude_none=True)
    assert list(message["context"]) == list(event.context.model_dump(exclude_none=True))


def test_table_specs_name_their_keys_and_partitions():
    for spec in ALL_TABLES.values():
        assert set(spec.keys) <= set(spec.columns), spec.name
        assert set(spec.partition_by) <= set(spec.columns), spec.name


@pytest.mark.spark
def test_spark_message_schema_covers_the_json_schema():
    from schemas.events import spark_message_schema

    names = set(spark_message_schema().fieldNames())
    assert set(event_json_schema()["properties"]) <= names
