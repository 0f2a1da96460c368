"""Serving's start-up reads what a speed view that never stopped would hold: rows within the horizon of
each table's newest, of the newest users up to the cap (real Delta on disk through delta-rs)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lambdarec.lake import Lake
from schemas.speed_updates import GLOBAL_SEGMENT, KIND_ITEM_TRENDING, KIND_USER_FEATURES
from schemas.tables import SPEED_ITEM_TRENDING, SPEED_USER_FEATURES, SPEED_USER_INTERACTIONS
from serving.views.speed.bootstrap import bootstrap
from serving.views.speed.horizon import held
from serving.views.speed.view import SpeedView

pytestmark = pytest.mark.unit

NEWEST = datetime(2024, 5, 1, 12, tzinfo=UTC)


def interactions(lake: Lake, batch_id: int, rows: list[tuple[str, str, datetime]]) -> str:
    """Append ``(user, item, occurred_at)`` rows in one commit; the data file it wrote."""
    table = pa.Table.from_pylist(
        [{"user_id": user, "item_id": item, "event_type": "click", "weight": 1.0, "occurred_at": when,
          "event_id": f"{user}-{item}", "events_version": batch_id, "query_id": "q", "batch_id": batch_id}
         for user, item, when in rows], schema=SPEED_USER_INTERACTIONS.schema)
    before = set(DeltaTable(lake.uri(SPEED_USER_INTERACTIONS)).file_uris()) if lake.exists(SPEED_USER_INTERACTIONS) else set()
    lake.append_arrow(SPEED_USER_INTERACTIONS, table)
    (added,) = set(DeltaTable(lake.uri(SPEED_USER_INTERACTIONS)).file_uris()) - before
    return added


def test_rows_older_than_the_horizon_of_the_newest_are_never_read(settings):
    settings = settings.model_copy(update={"speed_view_horizon_s": 3 * 3600})
    lake = Lake(settings)
    old_file = interactions(lake, 0, [("gone", "a", NEWEST - timedelta(hours=4))])
    interactions(lake, 1, [("kept", "b", NEWEST - timedelta(hours=2)), ("new", "c", NEWEST)])
    lake.append_arrow(SPEED_USER_FEATURES, pa.Table.from_pylist(
        [{"user_id": user, "last_seen": when, "country": "DE", "query_id": "q", "batch_id": 0}
         for user, when in (("gone", NEWEST - timedelta(hours=4)), ("new", NEWEST))],
        schema=SPEED_USER_FEATURES.schema))
    lake.append_arrow(SPEED_ITEM_TRENDING, pa.Table.from_pylist(
        [{"segment_type": GLOBAL_SEGMENT[0], "segment": GLOBAL_SEGMENT[1], "window_start": start,
          "window_end": start + timedelta(minutes=1), "item_id": item, "events": 1, "weight": 1.0, "query_id": "q",
          "batch_id": 0} for item, start in (("old", NEWEST - timedelta(hours=2)), ("hot", NEWEST))],
        schema=SPEED_ITEM_TRENDING.schema))
    Path(old_file.removeprefix("file://")).unlink()  # start-up must not even open it

    view = SpeedView(settings)
    bootstrap(lake, view)
    assert view.interactions("gone") == [] and view.profile("gone") is None
    assert [i.item_id for i in view.interactions("kept")] == ["b"] and view.profile("new")["country"] == "DE"
    assert view.sizes()["trending"] == 1 and view.trending()[0] == [("hot", 1.0)]  # one trending window


def test_past_the_user_cap_only_the_newest_users_are_loaded(settings):
    settings = settings.model_copy(update={"speed_view_max_users": 2})
    lake = Lake(settings)
    interactions(lake, 0, [("u1", "a", NEWEST - timedelta(minutes=3)), ("u2", "b", NEWEST - timedelta(minutes=2))])
    interactions(lake, 1, [("u3", "c", NEWEST - timedelta(minutes=1)), ("u1", "d", NEWEST)])  # u1 active again
    evictions: Counter = Counter()
    view = SpeedView(settings, on_evict=lambda entry, reason, n: evictions.update({(entry, reason): n}))
    bootstrap(lake, view)
    assert view.interactions("u2") == [] and [i.item_id for i in view.interactions("u1")] == ["a", "d"]
    assert [i.item_id for i in view.interactions("u3")] == ["c"]
    assert evictions == {}  # left out before loading, not loaded and evicted


def test_each_users_newest_features_row_and_the_weightiest_trending_rows_are_all_that_is_loaded(settings):
    settings = settings.model_copy(update={"speed_view_max_trending_rows": 2})
    features = pa.Table.from_pylist(
        [{"user_id": "u1", "last_seen": NEWEST - timedelta(minutes=2 - batch), "country": country, "query_id": "q",
          "batch_id": batch} for batch, country in ((1, "FR"), (0, "DE"))], schema=SPEED_USER_FEATURES.schema)
    assert held(KIND_USER_FEATURES, features, settings).to_pylist()[0]["country"] == "FR"  # batch 1's, not the last row

    def trending(item, weight, batch):
        return {"segment_type": GLOBAL_SEGMENT[0], "segment": GLOBAL_SEGMENT[1], "window_start": NEWEST,
                "window_end": NEWEST + timedelta(minutes=1), "item_id": item, "events": 1, "weight": weight,
                "query_id": "q", "batch_id": batch}

    rows = pa.Table.from_pylist([trending("a", 1.0, 0), trending("b", 3.0, 0), trending("c", 2.0, 0),
                                 trending("a", 5.0, 1)], schema=SPEED_ITEM_TRENDING.schema)
    kept = held(KIND_ITEM_TRENDING, rows, settings).to_pylist()
    assert sorted((row["item_id"], row["weight"]) for row in kept) == [("a", 5.0), ("b", 3.0)]

    lake = Lake(settings)
    lake.append_arrow(SPEED_USER_FEATURES, features)
    lake.append_arrow(SPEED_ITEM_TRENDING, rows)
    view = SpeedView(settings)
    bootstrap(lake, view)
    assert view.profile("u1")["country"] == "FR" and view.trending()[0] == [("a", 5.0), ("b", 3.0)]
