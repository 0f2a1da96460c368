"""The erasure job on a lake with a user in every table (no speed job: nothing to wait for).

After it, no file under the lake holds the user: not a row in any Parquet file a
table ever wrote (unreferenced ones included), not a byte in the Delta logs or
the model bundles, and the request log keeps only their subject hash. Everyone
else's rows are untouched, the receipt counts what went and names every place,
and running it again changes nothing. A broker runs (the receipt reads how long
each topic keeps records), with no speed job.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from batch import erasure
from lambdarec import privacy
from deploy.generator import user_id
from lambdarec.pseudonym import pseudonymise
from schemas.tables import DEAD_LETTER, EVENTS, PRIVACY_RECEIPTS
from tests.support.lake import seed_lake
from tests.support.privacy import lake_with, rows_of, totals, traces
from tests.support.serving import write_model

pytestmark = pytest.mark.spark


def test_erasure_leaves_no_trace_of_the_user_and_keeps_everyone_else(spark, broker_settings):
    settings = broker_settings
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
    assert set(receipt["vacuum_versions"]) == {name for name, n in removed.items() if n} | {"privacy_requests"}
    assert receipt["vacuum_retention_hours"] == 0 and receipt["kafka_expires_by"] > receipt["received_at"]
    places = {p["place"]: p for p in receipt["places"]}
    assert {name for name, n in removed.items() if n} == {
        name.removeprefix("lake:") for name, p in places.items() if name.startswith("lake:") and p["status"] == "removed"
    } - {"privacy_requests"}
    assert places["speed_state"]["status"] == "not_held"  # no features query ran
    assert {places[f"kafka:{t}"]["status"] for t in ("events", "consent", "speed-updates")} == {"expires"}
    assert "operational_db" not in places  # no CDC topic: no operational database feeds this lake
    assert receipt["subject_hash"] == privacy.subject_hash(user)
    assert privacy.pending(lake) == [] and privacy.request(lake, "r1").user_id is None

    # Run again, or re-run this request: one receipt, the same one.
    assert erasure.run(spark, settings) == []
    request = privacy.request(lake, "r1")
    assert erasure.erase(spark, settings, dataclasses.replace(request, user_id=user)) == receipt
    assert lake.read_arrow(PRIVACY_RECEIPTS).num_rows == 1

    # The next model is trained without them; the receipt names it once it exists.
    assert privacy.first_model_without(lake, receipt["delete_versions"][EVENTS.name]) is None
    write_model(lake, 2, lake.version(EVENTS), {"item-1": [1.0, 0.0]}, {other: {"item-1": 1.0}})
    assert privacy.first_model_without(lake, receipt["delete_versions"][EVENTS.name]) == 2


def test_erasing_an_unknown_user_gives_a_receipt_with_zeros(spark, broker_settings):
    settings = broker_settings
    lake = seed_lake(settings, n_events=200)
    total_before = totals(lake)
    privacy.record_erasure(lake, pseudonymise("nobody", settings.pseudonym_key), "r-unknown", "api", {})
    [receipt] = erasure.run(spark, settings)
    assert receipt["request_id"] == "r-unknown" and set(receipt["removed"].values()) == {0}
    assert receipt["vacuum_versions"].keys() == {"privacy_requests"}  # only the request log's pseudonym went
    assert totals(lake) == {**total_before, "privacy_requests": 1, "privacy_receipts": 1}
