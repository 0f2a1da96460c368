"""The erasure job on a lake with a user in every table (no speed job: nothing to wait for).

After it, no file under the lake holds the user: not a row in any Parquet file a
table ever wrote (unreferenced ones included), not a byte in the Delta logs or
the model bundles. Everyone else's rows are untouched, the receipt counts what
went, and running it again changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from batch import erasure
from lambdarec import privacy
from lambdarec.generator import user_id
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import (
    ALL_TABLES,
    DEAD_LETTER,
    EVENTS,
    MODEL_INTERACTIONS,
    PRIVACY_RECEIPTS,
    SPEED_USER_FEATURES,
    SPEED_USER_INTERACTIONS,
    USER_FACTORS,
    USER_IDS,
)
from tests.support.lake import seed_lake
from tests.support.serving import write_model

pytestmark = pytest.mark.spark

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


def test_erasure_leaves_no_trace_of_the_user_and_keeps_everyone_else(spark, settings):
    raw, other_raw = user_id(3), user_id(4)
    lake, user, other = lake_with(settings, raw, other_raw)
    before, others_before, total_before = rows_of(lake, user), rows_of(lake, other), totals(lake)
    assert before[EVENTS.name] > 0 and all(before.values()), before
    assert traces(Path(lake.root), [user.encode()])  # the check finds what is there

    privacy.record_erasure(lake, user, "r1", "cli", {})
    [receipt] = erasure.run(spark, settings)

    assert rows_of(lake, user) == {name: 0 for name in before}
    assert rows_of(lake, other) == others_before
    removed = receipt["removed"]
    assert {name: removed[name] for name in before} == {
        **before, DEAD_LETTER.name: 3}  # the pseudonym twice, and the raw id once (matched by its pseudonym)
    after = totals(lake)
    for name, count in total_before.items():
        assert after[name] == count - removed.get(name, 0), name
    assert traces(Path(lake.root), [user.encode(), f'"user_id": "{raw}"'.encode()]) == []
    assert set(receipt["vacuum_versions"]) == {name for name, n in removed.items() if n}
    assert receipt["vacuum_retention_hours"] == 0 and receipt["kafka_expires_by"] > receipt["received_at"]
    assert receipt["subject_hash"] == privacy.subject_hash(user)
    assert privacy.pending(lake) == [] and privacy.request(lake, "r1")["user_id"] is None

    # Run again, or re-run this request: one receipt, the same one.
    assert erasure.run(spark, settings) == []
    request = privacy.request(lake, "r1")
    assert erasure.erase(spark, settings, {**request, "user_id": user}) == receipt
    assert lake.read_arrow(PRIVACY_RECEIPTS).num_rows == 1

    # The next model is trained without them; the receipt names it once it exists.
    assert privacy.first_model_without(lake, receipt["delete_versions"][EVENTS.name]) is None
    write_model(lake, 2, lake.version(EVENTS), {"item-1": [1.0, 0.0]}, {other: {"item-1": 1.0}})
    assert privacy.first_model_without(lake, receipt["delete_versions"][EVENTS.name]) == 2


def test_erasing_an_unknown_user_gives_a_receipt_with_zeros(spark, settings):
    lake = seed_lake(settings, n_events=200)
    total_before = totals(lake)
    privacy.record_erasure(lake, pseudonymise("nobody", settings.pseudonym_key), "r-unknown", "api", {})
    [receipt] = erasure.run(spark, settings)
    assert receipt["request_id"] == "r-unknown" and set(receipt["removed"].values()) == {0}
    assert receipt["vacuum_versions"] == {}  # nothing was removed, so nothing to vacuum
    assert totals(lake) == {**total_before, "privacy_requests": 1, "privacy_receipts": 1}
