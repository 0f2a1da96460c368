"""The CDC contract: Debezium's change envelopes as ``lambdarec cdc`` configures the connector.

Each change is a JSON record (no schemas) keyed by the row's primary key:
``{"op", "source": {"lsn", ...}, "before", "after"}``, values as Debezium's JSON
converter writes them (decimals as strings, timestamps as ISO text); a delete is
followed by a tombstone (a null value). Two consumers read it: the speed job's
dimensions query (Spark, ``speed.dimensions``) MERGEs every change into the lake,
and serving applies item availability at once (``serving.views.catalogue_changes``)
so an item set unavailable leaves the answers before the lake has it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from schemas.tables import ITEM_CATALOGUE, USER_PROFILES, TableSpec

OPS = ("c", "u", "d", "r")  # create, update, delete, snapshot read
DELETE = "d"
ENVELOPE_SCHEMA = "op string, source struct<lsn:bigint>, after string, before string"  # Spark DDL, rows as text


@dataclass(frozen=True)
class Dimension:
    """One operational table and the lake table its changes are merged into."""

    table: str  # schema.name in Postgres
    spec: TableSpec
    key: str
    after_schema: str  # the row as Debezium's JSON converter writes it (Spark DDL)
    keeps_deleted: bool = False  # a delete marks the row deleted rather than removing it


ITEMS = Dimension(
    "public.items", ITEM_CATALOGUE, "item_id",
    "item_id string, title string, category string, price string, available boolean, attributes string, "
    "updated_at string",
    keeps_deleted=True,  # the model still knows a deleted item: serving must know it is gone
)
USERS = Dimension(
    "public.users", USER_PROFILES, "user_id",
    "user_id string, country string, age_band string, signup_date int, membership string, updated_at string",
)
DIMENSIONS = (ITEMS, USERS)
TABLES = tuple(dimension.table for dimension in DIMENSIONS)
"""The operational tables the connector captures: its publication's."""


def topic(prefix: str, table: str) -> str:
    """The topic of one operational table's changes (``table`` as ``schema.name``; ``prefix``:
    ``Settings.cdc_topic_prefix``), named as Debezium names it."""
    return f"{prefix}.{table}"


def topics(prefix: str) -> list[str]:
    """Every topic the connector writes: one per operational table."""
    return [topic(prefix, table) for table in TABLES]


@dataclass(frozen=True)
class AvailabilityChange:
    """What one ``items`` change says about whether the item may be recommended."""

    item_id: str
    lsn: int
    available: bool | None  # None: the row was deleted


def decode_availability(value: bytes | None) -> AvailabilityChange | None:
    """An ``items`` change record's availability; None for a tombstone or a record the dimensions query
    would dead-letter (no op, LSN, key or ``available``), which serving leaves to the lake."""
    if value is None:
        return None
    try:
        envelope = json.loads(value)
    except ValueError:
        return None
    if not isinstance(envelope, dict) or envelope.get("op") not in OPS:
        return None
    lsn = (envelope.get("source") or {}).get("lsn")
    row = envelope.get("before") if envelope["op"] == DELETE else envelope.get("after")
    if not isinstance(lsn, int) or not isinstance(row, dict) or not isinstance(row.get(ITEMS.key), str):
        return None
    if envelope["op"] == DELETE:
        return AvailabilityChange(row[ITEMS.key], lsn, None)
    available = row.get("available")
    if not isinstance(available, bool):
        return None
    return AvailabilityChange(row[ITEMS.key], lsn, available)
