"""Bootstrap the speed view from the Delta speed tables after a restart.

The speed job commits each micro-batch to its tables before pushing it to
``speed-updates``, so the tables hold at least everything the topic does (and
all of it when the memory-only broker restarted too). Each table's rows are
loaded per (query_id, batch_id) in batch order; the view then skips those
batches on the topic and applies only what came after.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import pyarrow as pa

from lambdarec.lake import Lake
from schemas.tables import SPEED_ITEM_TRENDING, SPEED_PROGRESS, SPEED_USER_FEATURES, SPEED_USER_INTERACTIONS, TableSpec
from schemas.speed_updates import (
    KIND_ITEM_TRENDING,
    KIND_PROGRESS,
    KIND_USER_FEATURES,
    KIND_USER_INTERACTIONS,
    progress_row,
    row,
)
from serving.speed_view import SpeedView

log = logging.getLogger(__name__)

TABLES: dict[str, TableSpec] = {
    KIND_USER_INTERACTIONS: SPEED_USER_INTERACTIONS,
    KIND_USER_FEATURES: SPEED_USER_FEATURES,
    KIND_ITEM_TRENDING: SPEED_ITEM_TRENDING,
    KIND_PROGRESS: SPEED_PROGRESS,
}


def bootstrap(lake: Lake, view: SpeedView) -> dict[str, int]:
    """Load every speed table that exists into ``view``; returns table -> Delta version read."""
    versions: dict[str, int] = {}
    for kind, spec in TABLES.items():
        version = lake.version(spec)
        if version is None:
            continue
        table = lake.read_arrow(spec, version)
        loaded = 0
        for (query_id, batch_id), rows in _batches(kind, table):
            view.load_batch(kind, query_id, batch_id, rows)
            loaded += len(rows)
        versions[spec.name] = version
        log.info("speed view bootstrapped", extra={"table": spec.name, "version": version, "rows": loaded})
    return versions


def _batches(kind: str, table: pa.Table) -> list[tuple[tuple[str, int], list[dict[str, Any]]]]:
    """Rows grouped by (query_id, batch_id), batches in order, each row in its message form
    (``schemas.speed_updates``: the same timestamps and maps as on the topic)."""
    as_message = progress_row if kind == KIND_PROGRESS else lambda values: row(kind, values)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for values in table.to_pylist():
        groups[(str(values["query_id"]), int(values["batch_id"]))].append(as_message(values))
    return sorted(groups.items(), key=lambda entry: (entry[0][1], entry[0][0]))
