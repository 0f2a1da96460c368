"""What of the Delta speed tables serving's start-up loads: what a speed view that never stopped would hold.

A running view keeps a user or item for ``speed_view_horizon_s`` after their newest
event, on its event-time clock (the newest event seen), at most
``speed_view_max_users`` users, and one trending window. The bootstrap reads each
table with the same bound pushed down to the scan (``since``: rows within the horizon
of the table's newest row, found in the Delta log's file statistics) and keeps the
newest ``speed_view_max_users`` users of what is left (``newest_users``). Start-up so
costs what the horizon holds, never the history the maintenance job has not pruned
yet (``batch.maintenance``, which prunes the tables to the same horizon).
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.speed_updates import KIND_USER_FEATURES, KIND_USER_INTERACTIONS
from schemas.tables import SPEED_HORIZON_COLUMNS, SPEED_ITEM_TRENDING, SPEED_USER_FEATURES, SPEED_USER_INTERACTIONS, TableSpec

USER_TABLES = {KIND_USER_INTERACTIONS: SPEED_USER_INTERACTIONS, KIND_USER_FEATURES: SPEED_USER_FEATURES}


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


def newest_users(kind: str, table: pa.Table, settings: Settings) -> pa.Table:
    """The rows of the ``speed_view_max_users`` users with the newest events (user tables; others as they are)."""
    spec = USER_TABLES.get(kind)
    if spec is None:
        return table
    column = SPEED_HORIZON_COLUMNS[spec.name]
    newest = table.group_by("user_id").aggregate([(column, "max")])
    if newest.num_rows <= settings.speed_view_max_users:
        return table
    kept = newest.sort_by([(f"{column}_max", "descending")]).slice(0, settings.speed_view_max_users)
    return table.filter(pc.is_in(table["user_id"], value_set=kept["user_id"]))


def _newest_us(lake: Lake, spec: TableSpec, version: int, column: str) -> int | None:
    """The greatest ``column`` value (µs) the table's files hold, from the Delta log (no data file is
    read; in µs, since a bad row's timestamp can be past what ``datetime`` holds)."""
    actions = pa.table(lake.open(spec, version).get_add_actions(flatten=True))
    name = f"max.{column}"
    if name not in actions.column_names or not actions.num_rows:
        return None
    return pc.max(actions[name].cast(pa.int64())).as_py()
