"""CDC test helpers: the check that the lake equals Postgres."""

from __future__ import annotations

import psycopg

from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import ITEM_CATALOGUE, USER_PROFILES


def postgres_rows(settings, table: str) -> dict:
    """The operational table's rows by primary key (the first column)."""
    with psycopg.connect(settings.operational_db) as db:
        cursor = db.execute(f"SELECT * FROM {table}")  # noqa: S608 - a fixed table name
        names = [c.name for c in cursor.description or ()]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def lake_matches_postgres(settings) -> bool:
    """Whether item_catalogue and user_profiles hold exactly Postgres's items and users, row for row;
    an item deleted in Postgres stays in the lake marked deleted and unavailable."""
    lake, key = Lake(settings), settings.pseudonym_key
    items, users = postgres_rows(settings, "items"), postgres_rows(settings, "users")
    catalogue = lake.read_arrow(ITEM_CATALOGUE).to_pylist()
    got_items = {r["item_id"]: r for r in catalogue if not r["deleted"]}
    deleted = [r for r in catalogue if r["deleted"]]
    got_users = {r["user_id"]: r for r in lake.read_arrow(USER_PROFILES).to_pylist()}
    if set(got_items) != set(items) or set(got_users) != {pseudonymise(u, key) for u in users}:
        return False
    if any(r["item_id"] in items or r["available"] is not False for r in deleted):
        return False
    return all(
        (got["title"], got["category"], got["price"], got["available"], dict(got["attributes"] or ()))
        == (row["title"], row["category"], float(row["price"]) if row["price"] is not None else None,
            row["available"], {k: str(v) for k, v in row["attributes"].items()})
        for got, row in ((got_items[i], items[i]) for i in items)
    ) and all(
        (got["country"], got["age_band"], got["signup_date"], got["membership"])
        == (row["country"], row["age_band"], row["signup_date"], row["membership"])
        for got, row in ((got_users[pseudonymise(u, key)], users[u]) for u in users)
    )
