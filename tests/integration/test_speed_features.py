"""The features query end to end: events query → Delta `events` stream → RocksDB state → Delta speed tables."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from lambdarec.lake import Lake
from schemas.speed_updates import GLOBAL_SEGMENT
from schemas.tables import ITEM_CATALOGUE, SPEED_ITEM_TRENDING, SPEED_PROGRESS, SPEED_USER_FEATURES, USER_PROFILES
from speed.job import FEATURES_QUERY_NAME, QUERY_NAME, catch_up, run_features
from speed.recompute import current, recompute
from tests.support.speed import message, pid, produce, run_to_end, speed_updates
from tests.support.delta import assert_delta_rs_reads_what_spark_reads

pytestmark = [pytest.mark.integration, pytest.mark.spark]

T0 = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(hours=3)


def at(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).isoformat()


def us(minutes: float) -> int:
    return round((T0 + dt.timedelta(minutes=minutes)).timestamp() * 1_000_000)


def profile(settings, user: str, age_band: str) -> None:
    Lake(settings).append_arrow(USER_PROFILES, pa.Table.from_pylist(
        [{"user_id": user, "age_band": age_band, "updated_at": T0}], schema=USER_PROFILES.schema))


def categories(settings, **category_of: str) -> None:
    Lake(settings).append_arrow(ITEM_CATALOGUE, pa.Table.from_pylist(
        [{"item_id": item, "category": category, "available": True, "updated_at": T0}
         for item, category in category_of.items()], schema=ITEM_CATALOGUE.schema))


def test_features_follow_the_events_and_equal_a_batch_recomputation(spark, broker_settings):
    settings = broker_settings
    profile(settings, pid("a"), "25-34")
    categories(settings, i1="shoes", i2="hats")
    first = [
        message(user_id=pid("a"), item_id="i1", event_type="view", occurred_at=at(0)),
        message(user_id=pid("a"), item_id="i2", event_type="click", occurred_at=at(10)),
        message(user_id=pid("b"), item_id="i1", event_type="purchase", occurred_at=at(5),
                context={"country": "FR"}),
    ]
    produce(settings, first)
    run_to_end(spark, settings)
    run_to_end(spark, settings, run_features)

    # A second wave: u_a returns after the session gap; a replayed id changes nothing; b has a
    # profile now, which the running stream's join picks up.
    profile(settings, pid("b"), "55+")
    replay = first[0]
    second = [
        message(user_id=pid("a"), item_id="i1", event_type="view", occurred_at=at(90)),
        message(user_id=pid("a"), item_id="i1", event_type="view", occurred_at=at(95)),
        message(user_id=pid("b"), item_id="i1", event_type="view", occurred_at=at(92), context={"country": "FR"}),
        replay,
    ]
    produce(settings, second)
    run_to_end(spark, settings)
    run_to_end(spark, settings, run_features)

    users, items = current(settings)
    assert (users, items) == recompute(spark, settings)
    a = users[pid("a")]
    assert a["session_events"] == 2 and a["session_start"] == round((T0 + dt.timedelta(minutes=90)).timestamp() * 1e6)
    assert dict(a["counts_24h"]) == {"view": 3, "click": 1} and dict(a["counts_1h"]) == {"view": 2}
    assert (a["country"], a["device"]) == ("DE", "ios")
    # category affinities: the catalogue's category of each item a used, per window
    assert dict(a["categories_24h"]) == {"shoes": 3, "hats": 1} and dict(a["categories_1h"]) == {"shoes": 2}
    # Trending rows are per (segment, item, minute); i1's are those of the hour ending after minute 95.
    assert {key[3]: row["events"] for key, row in items.items() if key[:3] == (*GLOBAL_SEGMENT, "i1")} == {
        us(90): 1, us(92): 1, us(95): 1}
    assert {key[3]: row["events"] for key, row in items.items() if key[:3] == ("device", "ios", "i1")} == {
        us(90): 1, us(95): 1}
    assert items[("country", "FR", "i1", us(92))]["events"] == 1  # b's view: FR, no device
    # the age band from user_profiles: a's since the start, b's since the second wave
    assert {key[3]: row["events"] for key, row in items.items() if key[:3] == ("age_band", "25-34", "i1")} == {
        us(90): 1, us(95): 1}
    assert {key[3]: row["events"] for key, row in items.items() if key[:3] == ("age_band", "55+", "i1")} == {
        us(92): 1}
    assert not [key for key in items if key[:2] == ("device", None)]

    for spec in (SPEED_USER_FEATURES, SPEED_ITEM_TRENDING):  # delta-spark wrote them; delta-rs reads them
        assert assert_delta_rs_reads_what_spark_reads(spark, Lake(settings), spec) > 0

    kinds = {u["kind"] for u in speed_updates(settings)}
    assert kinds == {"interaction", "user_features", "item_trending", "progress"}

    # Running again from the checkpoints finds nothing new and commits nothing.
    lake = Lake(settings)
    versions = (lake.version(SPEED_USER_FEATURES), lake.version(SPEED_ITEM_TRENDING))
    run_to_end(spark, settings, run_features)
    assert (lake.version(SPEED_USER_FEATURES), lake.version(SPEED_ITEM_TRENDING)) == versions


def test_a_catch_up_run_lands_the_events_then_their_features(spark, broker_settings):
    """``--available-now``: one run lands the events and the features of those same events."""
    settings = broker_settings
    produce(settings, [message(user_id=pid("c"), item_id="i1", event_type="view", occurred_at=at(n)) for n in range(3)])
    assert catch_up(spark, settings) == []
    users, _ = current(settings)
    assert dict(users[pid("c")]["counts_24h"]) == {"view": 3}
    recorded = Lake(settings).read_arrow(SPEED_PROGRESS).to_pylist()
    assert {row["query_name"] for row in recorded} >= {QUERY_NAME, FEATURES_QUERY_NAME}
    assert sum(row["rows_in"] for row in recorded if row["query_name"] == QUERY_NAME) == 3
