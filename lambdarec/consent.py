"""Each user's consent, as the ``user_consent`` table holds it: what serving, export and the speed job read.

A user's consent to a purpose is their latest change in Kafka order (timestamp,
then partition offset); a user with no change has consented (events carry their
own ``context.consent`` too, which the speed layer checks per event).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow.compute as pc

from lambdarec.lake import Lake
from schemas.consent import PERSONALISATION
from schemas.tables import USER_CONSENT


def history(lake: Lake, pseudonym: str | None = None) -> list[dict[str, Any]]:
    """Every change (of one user, if given) in the order they took effect."""
    only = None if pseudonym is None else pc.field("user_id") == pseudonym
    rows = lake.read_arrow(USER_CONSENT, filter=only).to_pylist()
    return sorted(rows, key=lambda row: (row["kafka_timestamp"], row["kafka_partition"], row["kafka_offset"]))


def withdrawn(changes: list[dict[str, Any]], purpose: str = PERSONALISATION) -> set[str]:
    """Users whose latest change of ``purpose`` in ``changes`` (in effect order) is a withdrawal."""
    latest = {row["user_id"]: row["granted"] for row in changes if row["purpose"] == purpose}
    return {user for user, granted in latest.items() if not granted}


def withdrawn_intervals(changes: list[dict[str, Any]], purpose: str = PERSONALISATION
                        ) -> list[tuple[str, datetime, datetime | None]]:
    """(user, from, until) of every stretch without consent to ``purpose`` in ``changes`` (in effect
    order), by Kafka timestamp; ``until`` is None while it lasts. Repeated withdrawals extend one stretch."""
    intervals: list[tuple[str, datetime, datetime | None]] = []
    since: dict[str, datetime] = {}
    for row in changes:
        if row["purpose"] != purpose:
            continue
        user, at = row["user_id"], row["kafka_timestamp"]
        if not row["granted"]:
            since.setdefault(user, at)
        elif user in since:
            intervals.append((user, since.pop(user), at))
    return intervals + [(user, start, None) for user, start in since.items()]


def erasure_request_id(change_id: str) -> str:
    """The id of the erasure a withdrawal records when ``erasure_on_withdrawal`` is on (the API returns it)."""
    return f"consent-{change_id}"
