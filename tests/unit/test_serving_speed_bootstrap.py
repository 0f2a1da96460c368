"""Bootstrapping the speed view from the Delta speed tables (real Delta on disk)."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, Counter

from lambdarec.lake import Lake
from schemas.speed_updates import GLOBAL_SEGMENT
from schemas.tables import SPEED_ITEM_TRENDING, SPEED_USER_FEATURES, SPEED_USER_INTERACTIONS
from serving.views.speed.bootstrap import bootstrap
from serving.views.speed.view import SpeedView

pytestmark = pytest.mark.unit

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def interactions(batch_id, events_version, rows):
    return pa.Table.from_pylist(
        [{"user_id": u, "item_id": i, "event_type": "click", "weight": w, "occurred_at": T0, "event_id": e,
          "events_version": events_version, "query_id": "q1", "batch_id": batch_id} for u, i, w, e in rows],
        schema=SPEED_USER_INTERACTIONS.schema,
    )


def test_bootstrap_loads_every_table_then_the_topic_adds_only_newer_batches(settings):
    lake = Lake(settings)
    lake.append_arrow(SPEED_USER_INTERACTIONS, interactions(0, 3, [("u1", "a", 1.0, "e1")]))
    lake.append_arrow(SPEED_USER_INTERACTIONS, interactions(1, 4, [("u1", "b", 2.0, "e2"), ("u2", "a", 1.0, "e3")]))
    lake.append_arrow(SPEED_USER_FEATURES, pa.Table.from_pylist(
        [{"user_id": "u1", "last_seen": T0, "country": "DE", "device": "ios", "query_id": "q1", "batch_id": 1}],
        schema=SPEED_USER_FEATURES.schema))
    lake.append_arrow(SPEED_ITEM_TRENDING, pa.Table.from_pylist(
        [{"segment_type": GLOBAL_SEGMENT[0], "segment": GLOBAL_SEGMENT[1], "window_start": T0,
          "window_end": T0 + timedelta(minutes=1), "item_id": "a", "events": 2, "weight": 2.0, "query_id": "q1",
          "batch_id": 1}], schema=SPEED_ITEM_TRENDING.schema))

    view = SpeedView(settings)
    versions = bootstrap(lake, view)
    assert versions == {"speed_user_interactions": 2, "speed_user_features": 1, "speed_item_trending": 1}
    assert [i.item_id for i in view.interactions("u1")] == ["a", "b"]
    assert view.interactions("u1")[0].occurred_at == "2024-05-01T12:00:00.000000+00:00"  # the contract's text
    assert view.profile("u1")["country"] == "DE"
    assert view.profile("u1")["last_seen"] == "2024-05-01T12:00:00.000000+00:00"
    assert view.trending() == ([("a", 2.0)], "2024-05-01T11:01:00.000000+00:00")  # the hour ending 12:01
    assert view.position()["events_version"] == 4

    replayed = {"kind": "user_interactions", "query_id": "q1", "batch_id": 1, "events_version": 4, "rows": [
        {"user_id": "u1", "item_id": "c", "event_type": "click", "weight": 1.0,
         "occurred_at": "2024-05-01T12:00:00+00:00", "event_id": "e-other"}]}
    assert view.apply(replayed) == 0  # the table already holds batch 1
    assert view.apply({**replayed, "batch_id": 2, "events_version": 5}) == 1


def test_missing_tables_bootstrap_to_an_empty_view(settings):
    view = SpeedView(settings)
    assert bootstrap(Lake(settings), view) == {}
    assert view.interactions("anyone") == []


def test_bad_rows_are_skipped_and_counted_and_the_view_still_bootstraps(settings):
    """Rows written before the speed job refused them (an infinite weight, a NaN, a minute ending in
    year 10000, which Arrow holds and Python's datetime cannot) cost themselves, never the start-up."""
    lake = Lake(settings)
    lake.append_arrow(SPEED_USER_INTERACTIONS, interactions(0, 3, [("u1", "a", 1.0, "e1"),
                                                                   ("u1", "b", float("nan"), "e2")]))
    good = {"segment_type": GLOBAL_SEGMENT[0], "segment": GLOBAL_SEGMENT[1], "window_start": T0,
            "window_end": T0 + timedelta(minutes=1), "item_id": "a", "events": 2, "weight": 2.0, "query_id": "q1",
            "batch_id": 1}
    rows = pa.Table.from_pylist([good, {**good, "item_id": "inf", "weight": float("inf")}, {**good, "item_id": "far"}],
                                schema=SPEED_ITEM_TRENDING.schema)
    year_10000 = pa.array([int(T0.timestamp() * 1e6)] * 2 + [253_402_300_800_000_000], pa.int64()).cast(
        SPEED_ITEM_TRENDING.schema.field("window_end").type)
    lake.append_arrow(SPEED_ITEM_TRENDING, rows.set_column(rows.schema.get_field_index("window_end"), "window_end",
                                                           year_10000))
    skipped = Counter("skipped", "test", ["table"], registry=CollectorRegistry())

    view = SpeedView(settings)
    assert bootstrap(lake, view, skipped) == {"speed_user_interactions": 1, "speed_item_trending": 1}
    assert [i.item_id for i in view.interactions("u1")] == ["a"]
    assert [item for item, _ in view.trending()[0]] == ["a"]
    assert skipped.labels("speed_user_interactions")._value.get() == 1
    assert skipped.labels("speed_item_trending")._value.get() == 2
