"""What of the Delta speed tables serving's start-up loads: what a speed view that never stopped would hold.

A running view keeps a user or item for ``speed_view_horizon_s`` after their newest
event, on its event-time clock (the newest event seen), at most
``speed_view_max_users`` users, and one trending window. The bootstrap reads each
table with the same bound pushed down to the scan (``since``: rows within the horizon
of the table's newest row, found in the Delta log's file statistics) and keeps of what is left what the
view would hold (``held``): the newest ``speed_view_max_users`` users, each user's newest
features row, and the weightiest trending rows up to their cap. Start-up so
costs what the horizon holds, never the history the maintenance job has not pruned
yet (``batch.maintenance``, which prunes the tables to the same horizon).
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from lambdarec.lake import Lake
from lambdarec.settings import Settings
from serving.views.speed.state import Profiles
from schemas.speed_updates import KIND_ITEM_TRENDING, KIND_USER_FEATURES, KIND_USER_INTERACTIONS
from schemas.tables import SPEED_HORIZON_COLUMNS, SPEED_ITEM_TRENDING, SPEED_USER_FEATURES, SPEED_USER_INTERACTIONS, TableSpec

USER_TABLES = {KIND_USER_INTERACTIONS: SPEED_USER_INTERACTIONS, KIND_USER_FEATURES: SPEED_USER_FEATURES}
TRENDING_ENTRY = ["segment_type", "segment", "item_id"]
COLUMNS = {KIND_USER_FEATURES: ["user_id", *Profiles.FIELDS]}  # a profile keeps these; the maps of counts are large


def read_held(lake: Lake, kind: str, spec: TableSpec, version: int, settings: Settings) -> pa.Table:
    """The rows of ``spec`` at ``version`` a running view would hold, with only the columns it reads."""
    table = lake.dataset(spec, version).to_table(columns=COLUMNS.get(kind), filter=since(lake, spec, version, settings))
    return held(kind, table, settings)


def since(lake: Lake, spec: TableSpec, version: int, settings: Settings) -> pc.Expression | None:
    """The rows of ``spec`` (at ``version``) a running view would still hold: within the horizon (one
    trending window for trending) of the table's newest row, itself never later than this host's clock
    plus the allowed skew. None when the log has no statistics to tell the newest row by."""
    column = SPEED_HORIZON_COLUMNS[spec.name]
    newest_us = _newest_us(lake, spec, version, column)
    if newest_us is None:
        return None
    now_us = min(newest_us, int((time.time() + settings.speed_max_clock_skew_s) * 1_000_000))
    kept_s = settings.speed_trending_window_s if spec is SPEED_ITEM_TRENDING else settings.speed_view_horizon_s
    cutoff = pa.scalar(now_us - kept_s * 1_000_000, pa.int64()).cast(spec.schema.field(column).type)
    return pc.field(column) >= cutoff


def held(kind: str, table: pa.Table, settings: Settings) -> pa.Table:
    """What of ``table`` (rows of ``kind`` within the horizon) a running view would hold: of the user
    tables the newest ``speed_view_max_users`` users' rows, and of the features each user's newest row;
    of trending the newest row per (segment, item, minute), of the items that weigh most in their
    segment, up to ``speed_view_max_trending_rows`` rows. Other tables as they are."""
    if kind in USER_TABLES:
        table = _newest_users(table, SPEED_HORIZON_COLUMNS[USER_TABLES[kind].name], settings.speed_view_max_users)
    if kind == KIND_USER_FEATURES:
        return _last_per(table, ["user_id"])
    if kind == KIND_ITEM_TRENDING:
        return _heaviest(_last_per(table, [*TRENDING_ENTRY, "window_start"]), settings.speed_view_max_trending_rows)
    return table


def _newest_users(table: pa.Table, column: str, cap: int) -> pa.Table:
    newest = table.group_by("user_id").aggregate([(column, "max")])
    if newest.num_rows <= cap:
        return table
    kept = newest.sort_by([(f"{column}_max", "descending")]).slice(0, cap)
    return table.filter(pc.is_in(table["user_id"], value_set=kept["user_id"]))


def _last_per(table: pa.Table, keys: list[str]) -> pa.Table:
    """The last row per ``keys`` in batch order: the one a view applying the batches in order keeps."""
    ordered = table.sort_by([("batch_id", "ascending"), ("query_id", "ascending")])
    numbered = ordered.append_column("__row", pa.array(range(ordered.num_rows), pa.int64()))
    last = numbered.group_by(keys).aggregate([("__row", "max")])["__row_max"]
    return ordered.take(pc.take(last, pc.sort_indices(last)))  # in batch order still


def _heaviest(table: pa.Table, max_rows: int) -> pa.Table:
    """The rows of the (segment, item)s that weigh most in their minutes, up to ``max_rows`` rows."""
    if table.num_rows <= max_rows:
        return table
    entries = table.group_by(TRENDING_ENTRY).aggregate([("weight", "sum"), ("weight", "count")])
    entries = entries.sort_by([("weight_sum", "descending")])
    fits = pc.less_equal(pc.cumulative_sum(entries["weight_count"]), max_rows)
    return table.join(entries.filter(fits).select(TRENDING_ENTRY), keys=TRENDING_ENTRY, join_type="inner")


def _newest_us(lake: Lake, spec: TableSpec, version: int, column: str) -> int | None:
    """The greatest ``column`` value (µs) the table's files hold, from the Delta log (no data file is
    read; in µs, since a bad row's timestamp can be past what ``datetime`` holds)."""
    actions = pa.table(lake.open(spec, version).get_add_actions(flatten=True))
    name = f"max.{column}"
    if name not in actions.column_names or not actions.num_rows:
        return None
    return pc.max(actions[name].cast(pa.int64())).as_py()
