"""Privacy requests and receipts: what the API, the CLI, the erasure job and serving share.

An erasure request is appended to the Delta table ``privacy_requests`` before it
is acknowledged, so an acknowledged request survives any crash. It carries the
subject's pseudonym (needed to find their rows) only until their rows are gone,
and the end offsets of the ``events`` topic when it arrived: every event sent
before the request is erased, even one still on its way through the speed
layer. The erasure job (``batch.erasure``) does the work, nulls the pseudonym
(vacuuming the files that held it) and then appends one receipt to
``privacy_receipts``: a request is pending until its receipt exists.

Neither table holds an id once a request is done: both are keyed by
``subject_hash``, a one-way hash of the pseudonym, which whoever holds the
pseudonym can recompute and nobody can reverse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lambdarec import registry
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import PRIVACY_RECEIPTS, PRIVACY_REQUESTS

if TYPE_CHECKING:
    from pyspark.sql import Column

ERASURE = "erasure"
SPEED_STATE_ERASURE = "speed_state_erasure"
"""The erasure job's marker row, appended once the user's earlier events are in the lake: the speed
features query streams it to the stateful processor, which clears the user's state."""
SPEED_STATE_TICK = "speed_state_tick"
"""A row without a user the erasure job appends after the marker: each makes the features query run one
more batch, so the state versions from before the clearing age out (``lambdarec.speed_state_retention``)."""
SUBJECT_PREFIX = "lambdarec-subject:"
SOURCES = ("api", "cli", "consent")
REQUEST_ID_MAX = 128


class RequestConflict(ValueError):
    """A request id already names a request for another subject."""


@dataclass(frozen=True)
class ErasureRequest:
    """An erasure request as ``privacy_requests`` keeps it, and as the API, the CLI, the speed layer's consent
    handling, the erasure job and serving pass it to each other."""

    request_id: str
    subject_hash: str
    user_id: str | None  # the subject's pseudonym, until the erasure job nulls it (their rows are gone)
    requested_at: datetime
    events_end_offsets: dict[int, int]  # partition -> end of the events topic when the request arrived
    source: str  # api, cli or consent (a withdrawal with erasure on withdrawal)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ErasureRequest:
        return cls(request_id=row["request_id"], subject_hash=row["subject_hash"], user_id=row["user_id"],
                   requested_at=row["requested_at"], events_end_offsets=dict(row["events_end_offsets"] or []),
                   source=row["source"])

    def row(self, kind: str = ERASURE) -> dict[str, Any]:
        """Its ``privacy_requests`` row of ``kind`` (the request itself, or its speed-state marker)."""
        return {**dataclasses.asdict(self), "kind": kind, "events_end_offsets": list(self.events_end_offsets.items())}


def subject_hash(pseudonym: str) -> str:
    """The one-way key of a subject in privacy tables: SHA-256 of the pseudonym, hex."""
    return hashlib.sha256(f"{SUBJECT_PREFIX}{pseudonym}".encode()).hexdigest()


def spark_subject_hash(pseudonym: "Column") -> "Column":
    """``subject_hash`` as a Spark column expression."""
    from pyspark.sql import functions as F

    return F.sha2(F.concat(F.lit(SUBJECT_PREFIX), pseudonym), 256)


def new_request_id() -> str:
    return uuid.uuid4().hex


def check_request_id(request_id: str) -> str:
    if not request_id or len(request_id) > REQUEST_ID_MAX or not request_id.isprintable():
        raise ValueError(f"request_id must be 1 to {REQUEST_ID_MAX} printable characters")
    return request_id


def events_end_offsets(settings: Settings) -> dict[int, int]:
    """The end (next offset) of each partition of the events topic, now."""
    from kafka import TopicPartition

    from lambdarec.kafka_io import make_consumer

    consumer = make_consumer(settings.bootstrap_servers)
    try:
        partitions = [TopicPartition(settings.topic_events, p)
                      for p in sorted(consumer.partitions_for_topic(settings.topic_events) or ())]
        ends = consumer.end_offsets(partitions) if partitions else {}
    finally:
        consumer.close()
    return {tp.partition: int(offset) for tp, offset in ends.items()}


def record_erasure(lake: Lake, pseudonym: str, request_id: str, source: str,
                   end_offsets: dict[int, int]) -> ErasureRequest:
    """Append the erasure request (once per request id) and return its row.

    A repeated request id returns the first row; the same id for another subject is
    a ``RequestConflict``. The append carries the app transaction
    ``privacy-request-<id>``, so two racing callers record it once.
    """
    check_request_id(request_id)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    subject = subject_hash(pseudonym)
    existing = request(lake, request_id)
    if existing is None:
        new = ErasureRequest(request_id=request_id, subject_hash=subject, user_id=pseudonym,
                             requested_at=datetime.now(UTC), events_end_offsets=dict(end_offsets), source=source)
        lake.ensure(PRIVACY_REQUESTS)
        lake.append_arrow(PRIVACY_REQUESTS, pa.Table.from_pylist([new.row()], schema=PRIVACY_REQUESTS.schema),
                          app_id=f"privacy-request-{request_id}", txn_version=0)
        existing = request(lake, request_id)
        assert existing is not None  # just appended, by us or a racing caller
    if existing.subject_hash != subject:
        raise RequestConflict(f"request_id {request_id!r} already names an erasure of another user")
    return existing


def record_speed_marker(lake: Lake, erasure: ErasureRequest) -> int | None:
    """Append the speed-state marker of a pending erasure (once); the ``privacy_requests`` version holding it."""
    return lake.appender(PRIVACY_REQUESTS).append_once(
        pa.Table.from_pylist([erasure.row(SPEED_STATE_ERASURE)], schema=PRIVACY_REQUESTS.schema),
        f"privacy-marker-{erasure.request_id}", 0)


def record_speed_tick(lake: Lake, erasure: ErasureRequest) -> int:
    """Append a tick of the erasure (no user in it); the ``privacy_requests`` version holding it."""
    tick = dataclasses.replace(erasure, user_id=None, events_end_offsets={})
    return lake.appender(PRIVACY_REQUESTS).append(
        pa.Table.from_pylist([tick.row(SPEED_STATE_TICK)], schema=PRIVACY_REQUESTS.schema))


def request(lake: Lake, request_id: str) -> ErasureRequest | None:
    only = (pc.field("request_id") == request_id) & (pc.field("kind") == ERASURE)
    rows = lake.read_arrow(PRIVACY_REQUESTS, filter=only).to_pylist()
    return ErasureRequest.from_row(rows[0]) if rows else None


def pending(lake: Lake) -> list[ErasureRequest]:
    """Requests without a receipt, oldest first; one whose pseudonym is already nulled (its rows are gone)
    only lacks the receipt."""
    done = set(lake.read_arrow(PRIVACY_RECEIPTS).column("request_id").to_pylist())
    rows = lake.read_arrow(PRIVACY_REQUESTS, filter=pc.field("kind") == ERASURE).to_pylist()
    return sorted((ErasureRequest.from_row(row) for row in rows if row["request_id"] not in done),
                  key=lambda request: request.requested_at)


def ready(lake: Lake) -> list[ErasureRequest]:
    """Pending requests whose speed-state marker is recorded: the user's earlier events are all in the
    lake, so the speed sinks may delete their rows."""
    only = pc.field("user_id").is_valid() & (pc.field("kind") == SPEED_STATE_ERASURE)
    return [ErasureRequest.from_row(row) for row in lake.read_arrow(PRIVACY_REQUESTS, filter=only).to_pylist()]


def receipt(lake: Lake, request_id: str) -> dict[str, Any] | None:
    rows = lake.read_arrow(PRIVACY_RECEIPTS, filter=pc.field("request_id") == request_id).to_pylist()
    if not rows:
        return None
    found = rows[0]
    for name in ("removed", "delete_versions", "vacuum_versions"):
        found[name] = dict(found[name] or [])
    found["places"] = found.get("places") or []  # none in a receipt from before places were recorded
    return found


def erased_subjects(lake: Lake) -> dict[str, int | None]:
    """Every erased subject: ``subject_hash`` -> the ``events`` version of their DELETE (None while pending).

    A model trained on an older ``events`` version still holds the subject; serving
    must not use their row of it.
    """
    found: dict[str, int | None] = {}
    for row in lake.read_arrow(PRIVACY_RECEIPTS).to_pylist():
        found[row["subject_hash"]] = dict(row["delete_versions"] or []).get("events", -1)
    for request in pending(lake):
        found[request.subject_hash] = None
    return found


def completed_deletes(lake: Lake) -> list[tuple[int, float]]:
    """Every receipt's (``events`` version of its DELETE, completion as a timestamp)."""
    return [(dict(row["delete_versions"] or []).get("events", -1), row["completed_at"].timestamp())
            for row in lake.read_arrow(PRIVACY_RECEIPTS).to_pylist()]


def first_model_without(lake: Lake, events_version: int | None) -> int | None:
    """The first model trained on an ``events`` version at or after ``events_version``."""
    if events_version is None:
        return None
    later = [row["model_version"] for row in registry.current_statuses(lake).values()
             if row["source_events_version"] is not None and row["source_events_version"] >= events_version]
    return min(later) if later else None

