"""The speed job end to end: real broker, real Spark streaming, real Delta tables.

Covers exactly-once into Delta (a batch replayed after a crash between the Delta
commit and Spark's commit log writes nothing twice), dedupe by event_id, dead
letters, the versioned ``interaction`` messages the events query sends after its
commits, and the real-time query's unversioned ones.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from lambdarec.lake import Lake
from lambdarec.processes import wait_for
from tests.support.delta import assert_delta_rs_reads_what_spark_reads
from schemas.tables import DEAD_LETTER, EVENTS, SPEED_USER_INTERACTIONS
from speed.job import checkpoint_location, run_realtime
from tests.support.speed import message, pid, produce, run_to_end, speed_updates

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def test_events_land_exactly_once_with_dead_letters_and_updates(spark, broker_settings):
    settings = broker_settings
    good = [message(event_id=str(uuid.uuid4()), user_id=pid(f"u_{i % 4}")) for i in range(30)]
    duplicate = good[3]
    produce(settings, [*good, b"{broken", message(event_type="teleport"), duplicate])
    run_to_end(spark, settings)

    lake = Lake(settings)
    events = lake.read_arrow(EVENTS)
    ids = events.column("event_id").to_pylist()
    assert len(ids) == 30 and len(set(ids)) == 30
    reasons = sorted(lake.read_arrow(DEAD_LETTER).column("reason").to_pylist())
    assert reasons == ["malformed_json", "unknown_event_type:teleport"]
    speed_rows = lake.read_arrow(SPEED_USER_INTERACTIONS)
    assert sorted(speed_rows.column("event_id").to_pylist()) == sorted(ids)

    updates = [u for u in speed_updates(settings) if u["kind"] == "interaction"]
    assert sorted(u["event_id"] for u in updates) == sorted(ids)
    assert {u["events_version"] for u in updates} == set(speed_rows.column("events_version").to_pylist())

    for spec in (EVENTS, DEAD_LETTER, SPEED_USER_INTERACTIONS):  # delta-spark wrote them; delta-rs reads them
        assert assert_delta_rs_reads_what_spark_reads(spark, lake, spec) > 0

    # A second run from the same checkpoint finds nothing new and writes nothing.
    versions = {spec.name: lake.version(spec) for spec in (EVENTS, DEAD_LETTER, SPEED_USER_INTERACTIONS)}
    run_to_end(spark, settings)
    assert {spec.name: lake.version(spec) for spec in (EVENTS, DEAD_LETTER, SPEED_USER_INTERACTIONS)} == versions


def test_batch_replayed_after_crash_between_delta_and_spark_commit_writes_nothing_twice(spark, broker_settings):
    settings = broker_settings
    produce(settings, [message() for _ in range(20)])
    run_to_end(spark, settings)
    lake = Lake(settings)
    assert lake.read_arrow(EVENTS).num_rows == 20

    # Simulate the crash: Delta has the batch, Spark's commit log does not.
    commits = Path(checkpoint_location(settings)) / "commits"
    last = max(commits.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    last.unlink()
    shutil.rmtree(commits / f".{last.name}.crc", ignore_errors=True)
    (commits / f".{last.name}.crc").unlink(missing_ok=True)

    produce(settings, [message() for _ in range(5)])
    run_to_end(spark, settings)
    events = lake.read_arrow(EVENTS)
    assert events.num_rows == 25
    assert len(set(events.column("event_id").to_pylist())) == 25
    assert lake.read_arrow(SPEED_USER_INTERACTIONS).num_rows == 25


def test_the_realtime_query_sends_each_valid_consented_event_within_its_batch(spark, broker_settings):
    settings = broker_settings
    good = [message(event_id=str(uuid.uuid4()), user_id=pid(f"u_{i % 3}")) for i in range(10)]
    refused = message(context={"consent": False})
    produce(settings, [*good, b"{broken", message(event_type="teleport"), refused])
    query = run_realtime(spark, settings)
    try:
        expected = {json.loads(v)["event_id"] for v in good}
        wait_for(lambda: {u["event_id"] for u in speed_updates(settings)} >= expected, 120,
                 "the real-time query's interaction messages")
        later = message(event_id=str(uuid.uuid4()))
        produce(settings, [later])
        wait_for(lambda: json.loads(later)["event_id"] in {u["event_id"] for u in speed_updates(settings)}, 60,
                 "an event sent while the real-time query runs")
    finally:
        query.stop()
    updates = speed_updates(settings)
    assert {u["kind"] for u in updates} == {"interaction"}
    assert all("events_version" not in u for u in updates)  # not in Delta yet: serving folds it in as fresh
    assert {u["event_id"] for u in updates} == expected | {json.loads(later)["event_id"]}
    first = next(u for u in updates if u["event_id"] == json.loads(good[0])["event_id"])
    assert (first["user_id"], first["item_id"], first["event_type"], first["weight"]) == (pid("u_0"), "item-1", "purchase", 8.0)
