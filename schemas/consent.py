"""Consent changes: the message on the ``consent`` topic and its row in ``user_consent``.

The API (``PUT /v1/users/{user_id}/consent/{purpose}``) and any other producer
(a consent-management platform, a CRM) send one message per change, keyed by the
user's pseudonym. The speed job's events query reads the topic before each
micro-batch and keeps every user's consent: after a withdrawal of
``personalisation`` a user's events are dropped before they reach any table, and
serving answers them with non-personal recommendations, until a new grant.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.events import PSEUDONYM_PATTERN

Purpose = Literal["personalisation"]
PURPOSES: tuple[str, ...] = get_args(Purpose)
"""What a user can consent to. ``personalisation`` covers storing their events and answering them personally."""
PERSONALISATION: Purpose = "personalisation"
INVALID_CONSENT = "invalid_consent"
"""The dead-letter reason of a consent message that does not parse (followed by ``:`` and the field)."""


class ConsentChange(BaseModel):
    """One grant or withdrawal, as it travels on the consent topic (``user_id`` is the pseudonym)."""

    model_config = ConfigDict(extra="forbid")

    change_id: str = Field(min_length=1, max_length=64, description="Unique per change: repeats are applied once.")
    user_id: str = Field(description="The user's pseudonym, never the raw id.")
    purpose: Purpose
    granted: bool
    changed_at: AwareDatetime = Field(description="When the user changed it (the caller's clock).")
    source: str = Field("api", min_length=1, max_length=64, description="Who sent it: api, or the producer's name.")

    @field_validator("user_id")
    @classmethod
    def _pseudonymous(cls, value: str) -> str:
        if not re.match(PSEUDONYM_PATTERN, value):
            raise ValueError("user_id must be a pseudonym (lambdarec.pseudonym.pseudonymise), not a raw id")
        return value

    @classmethod
    def new(cls, pseudonym: str, purpose: str, granted: bool, source: str = "api") -> "ConsentChange":
        return cls(change_id=uuid.uuid4().hex, user_id=pseudonym, purpose=purpose, granted=granted,
                   changed_at=datetime.now(UTC), source=source)

    def to_message(self) -> bytes:
        return self.model_dump_json().encode()

    def to_row(self, partition: int, offset: int, timestamp: datetime) -> dict[str, Any]:
        """The ``user_consent`` row of this change, read at (``partition``, ``offset``) with its Kafka time."""
        return {**self.model_dump(), "kafka_partition": partition, "kafka_offset": offset, "kafka_timestamp": timestamp}


def parse_message(raw: bytes | None) -> ConsentChange | str:
    """The change in a consent record, or the dead-letter reason it gets (``invalid_consent:<field>``)."""
    try:
        return ConsentChange.model_validate(json.loads(raw or b""))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValidationError) and exc.errors():
            return f"{INVALID_CONSENT}:{'.'.join(str(p) for p in exc.errors()[0]['loc']) or 'body'}"
        return f"{INVALID_CONSENT}:json"
