"""Batch recomputation of the speed features from ``events``, to check the streaming state.

The fault test and operators compare ``current()`` (the newest changelog row per
user and per item segment in the Delta speed tables) with ``recompute()`` (the
same folds of ``speed.features`` over every row of ``events``): after any
crash and replay they must be equal.

Trending rows are per (segment, item, minute). Both sides keep, per item in a
segment, the minutes of the window ending after the item's newest event: the
minutes the streaming state can never have pruned (see ``speed.features``), so
their newest rows hold every event, however the stream was batched. Older minutes
are history the table keeps and no trending window reads.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import EVENTS, SPEED_ITEM_TRENDING, SPEED_USER_FEATURES
from speed import features
from speed.transforms import to_user_interactions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ItemKey = tuple[str, str, str, int]  # segment_type, segment, item_id, minute (µs)
Views = tuple[dict[str, dict[str, Any]], dict[ItemKey, dict[str, Any]]]


def recompute(spark: "SparkSession", settings: Settings) -> Views:
    """(users, items) feature rows folded from the whole ``events`` table."""
    from pyspark.sql import functions as F

    from speed.stateful import with_dimensions

    events = Lake(settings).read_spark(spark, EVENTS)
    interactions = to_user_interactions(events, settings).withColumn("occurred_at", F.unix_micros("occurred_at"))
    rows = with_dimensions(interactions, spark, settings)
    by_user: dict[str, list] = defaultdict(list)
    by_item: dict[tuple, list] = defaultdict(list)
    for row in rows.toArrow().to_pylist():
        by_user[row["user_id"]].append(row)
        for segment in features.segments(row["country"], row["device"], row["age_band"]):
            by_item[(*segment, row["item_id"])].append(row)
    users = {
        user: _comparable(features.user_features(user, features.fold_user(features.new_user(), evs),
                                                 settings.speed_session_gap_s))
        for user, evs in by_user.items()
    }
    window = settings.speed_trending_window_s
    items = {}
    for key, evs in by_item.items():
        state = features.fold_item(features.new_item(), evs, window)
        for row in features.item_minutes(key[:2], key[2], state):
            items[(*key, row["window_start"])] = _comparable(row)
    return users, items


def current(settings: Settings) -> Views:
    """(users, items): the newest row per key of the speed feature tables."""
    lake = Lake(settings)
    users: dict[str, dict] = {}
    for row in _newest_first(lake.read_arrow(SPEED_USER_FEATURES)):
        users.setdefault(row["user_id"], _comparable(row))
    minutes: dict[ItemKey, dict] = {}
    for row in _newest_first(lake.read_arrow(SPEED_ITEM_TRENDING)):
        row = _comparable(row)
        minutes.setdefault((row["segment_type"], row["segment"], row["item_id"], row["window_start"]), row)
    newest: dict[tuple[str, str, str], int] = {}
    for key in minutes:
        newest[key[:3]] = max(newest.get(key[:3], key[3]), key[3])
    window = settings.speed_trending_window_s
    items = {key: row for key, row in minutes.items()
             if key[3] >= features.item_window_start(newest[key[:3]], window)}
    return users, items


def _newest_first(table) -> list[dict]:
    order = pc.sort_indices(table, sort_keys=[("batch_id", "descending")])
    return table.take(order).drop_columns(["query_id", "batch_id"]).to_pylist()


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    """Timestamps as µs and maps as sorted pairs, so both sides compare equal."""
    out = {}
    for key, value in row.items():
        if hasattr(value, "timestamp"):
            value = round(value.timestamp() * 1_000_000)
        elif isinstance(value, list):
            value = sorted(tuple(pair) for pair in value)
        out[key] = value
    return out
