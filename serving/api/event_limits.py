"""The ingestion edge's checks that depend on settings: an event's value range and time window.

The event model checks what it can alone (types, lengths, control characters, NFC);
``value`` and ``occurred_at`` are checked here against ``Settings.event_limits`` and the
server's clock, after parsing, and refused as FastAPI refuses a bad field: a 422 whose
``loc`` names the field (and the event's position in a batch).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.exceptions import RequestValidationError

from schemas.event_rules import EventLimits
from schemas.events import Event


def refuse_outside_limits(events: list[Event], limits: EventLimits, batch: bool) -> None:
    """Raise a 422 naming every field of ``events`` outside ``limits``; ``batch``: the body is a list."""
    now = datetime.now(UTC)
    errors: list[dict[str, Any]] = []
    for position, event in enumerate(events):
        where = ("body", position) if batch else ("body",)
        errors += [{"type": "value_error", "loc": (*where, field), "msg": f"Value error, {message}",
                    "input": value} for field, message, value in event.limit_problems(limits, now)]
    if errors:
        raise RequestValidationError(errors)
