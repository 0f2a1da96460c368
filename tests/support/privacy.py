"""A lake that holds one user in every table, and the checks that find what is left of them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from speed.job import run, run_features
from schemas.tables import (
    ALL_TABLES,
    DEAD_LETTER,
    EVENTS,
    MODEL_INTERACTIONS,
    SPEED_USER_FEATURES,
    SPEED_USER_INTERACTIONS,
    USER_FACTORS,
    USER_IDS,
)
from tests.support.lake import seed_lake
from tests.support.serving import write_model

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
USER_TABLES = (EVENTS, SPEED_USER_INTERACTIONS, SPEED_USER_FEATURES, USER_FACTORS, USER_IDS)


def lake_with(settings, raw: str, other_raw: str) -> tuple[Lake, str, str]:
    """Generated events, a published model, speed tables and dead letters that all hold ``raw``'s pseudonym."""
    lake = seed_lake(settings)
    key = settings.pseudonym_key
    user, other = pseudonymise(raw, key), pseudonymise(other_raw, key)
    write_model(lake, 1, lake.version(EVENTS), {"item-1": [1.0, 0.0], "item-2": [0.0, 1.0]},
                {user: {"item-1": 1.0}, other: {"item-2": 2.0}})
    lake.append_arrow(USER_IDS, pa.Table.from_pylist(  # the indexes write_model gave: sorted ids
        [{"user_id": u, "user_index": n, "first_model_version": 1} for n, u in enumerate(sorted([user, other]))],
        schema=USER_IDS.schema))
    lake.append_arrow(SPEED_USER_INTERACTIONS, pa.Table.from_pylist(
        [{"user_id": u, "item_id": "item-1", "event_type": "view", "weight": 1.0, "occurred_at": NOW,
          "event_id": f"s{n}", "events_version": 1, "query_id": "q", "batch_id": 0} for n, u in enumerate([user, other])],
        schema=SPEED_USER_INTERACTIONS.schema))
    lake.append_arrow(SPEED_USER_FEATURES, pa.Table.from_pylist(
        [{"user_id": u, "last_seen": NOW, "session_events": 1, "query_id": "q", "batch_id": 0} for u in (user, other)],
        schema=SPEED_USER_FEATURES.schema))
    raws = [json.dumps({"user_id": user, "event_type": "teleport"}), json.dumps({"user_id": raw, "item_id": ""}),
            f"not json but {user}", json.dumps({"user_id": other, "event_type": "teleport"}), "{broken"]
    lake.append_arrow(DEAD_LETTER, pa.Table.from_pylist(
        [{"raw": text.encode(), "reason": "test", "kafka_topic": "events", "kafka_partition": 0, "kafka_offset": n,
          "recorded_at": NOW} for n, text in enumerate(raws)], schema=DEAD_LETTER.schema))
    return lake, user, other


def rows_of(lake: Lake, user: str) -> dict[str, int]:
    """The user's rows in each table's current version."""
    found = {spec.name: lake.read_arrow(spec, filter=pc.field("user_id") == user).num_rows for spec in USER_TABLES}
    index = lake.read_arrow(USER_FACTORS, filter=pc.field("user_id") == user).column("user_index").to_pylist()
    found[MODEL_INTERACTIONS.name] = lake.read_arrow(MODEL_INTERACTIONS, filter=pc.field("user_index").isin(index)).num_rows
    raw = lake.read_arrow(DEAD_LETTER).column("raw").to_pylist()
    found[DEAD_LETTER.name] = sum(user.encode() in r for r in raw)
    return found


def totals(lake: Lake) -> dict[str, int]:
    return {name: lake.read_arrow(spec).num_rows for name, spec in ALL_TABLES.items() if lake.exists(spec)}


def traces(root: Path, needles: list[bytes]) -> list[str]:
    """Files under ``root`` holding a needle: in any Parquet row, or anywhere in any other file's bytes
    (UTF-8 and the UTF-32 of numpy's string arrays)."""
    encoded = [form for needle in needles for form in (needle, needle.decode().encode("utf-32-le"))]
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            cells = [v for column in table.columns for v in column.to_pylist() if isinstance(v, (str, bytes))]
            text = [v.encode() if isinstance(v, str) else v for v in cells]
            hit = any(needle in cell for needle in needles for cell in text)
        else:
            data = path.read_bytes()
            hit = any(needle in data for needle in encoded)
        if hit:
            found.append(str(path.relative_to(root)))
    return found


def api_events(user: str, n: int) -> list[dict]:
    """``n`` click events of ``user`` as a client posts them to ``/v1/events/batch``."""
    now = dt.datetime.now(dt.UTC)
    return [{"event_id": str(uuid.uuid4()), "user_id": user, "item_id": f"item-{(hash(user) + i) % 7}",
             "event_type": "click", "occurred_at": (now - dt.timedelta(seconds=1)).isoformat(),
             "context": {"country": "DE", "device": "web"}} for i in range(n)]


def start_speed(spark, settings) -> list:
    """The speed job's events and features queries, started in this process."""
    return [run(spark, settings), run_features(spark, settings)]
