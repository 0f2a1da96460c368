"""Bootstrap the speed view from the Delta speed tables after a restart.

The speed job commits each micro-batch to its tables before pushing it to
``speed-updates``, so the tables hold at least everything the topic does (and
all of it when the memory-only broker restarted too). Each table's rows are
loaded per (query_id, batch_id) in batch order; the view then skips those
batches on the topic and applies only what came after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
from prometheus_client import Counter

from lambdarec.lake import Lake
from schemas.tables import SPEED_ITEM_TRENDING, SPEED_PROGRESS, SPEED_USER_FEATURES, SPEED_USER_INTERACTIONS, TableSpec
from schemas.speed_updates import (
    KIND_ITEM_TRENDING,
    KIND_PROGRESS,
    KIND_USER_FEATURES,
    KIND_USER_INTERACTIONS,
    BadUpdate,
    decode_row,
    progress_row,
    row,
)
from serving.views.speed.horizon import read_held
from serving.views.speed.view import SpeedView

log = logging.getLogger(__name__)

CHUNK_ROWS = 65_536  # rows converted to Python at once

TABLES: dict[str, TableSpec] = {
    KIND_USER_INTERACTIONS: SPEED_USER_INTERACTIONS,
    KIND_USER_FEATURES: SPEED_USER_FEATURES,
    KIND_ITEM_TRENDING: SPEED_ITEM_TRENDING,
    KIND_PROGRESS: SPEED_PROGRESS,
}


def bootstrap(lake: Lake, view: SpeedView, skipped: Counter | None = None) -> dict[str, int]:
    """Load every speed table that exists into ``view``; returns table -> Delta version read.

    A row the contract cannot read (``schemas.speed_updates``: a non-finite weight, a timestamp
    past year 9999) is skipped and counted in ``skipped`` by table, so one bad row written
    before the speed job refused such rows cannot keep serving from becoming ready.
    """
    versions: dict[str, int] = {}
    for kind, spec in TABLES.items():
        version = lake.version(spec)
        if version is None:
            continue
        table = read_held(lake, kind, spec, version, view.settings)  # what a view that never stopped would hold
        loaded, unreadable = 0, [0]
        for (query_id, batch_id), rows in _batches(kind, table, unreadable):
            try:
                view.load_batch(kind, query_id, batch_id, rows)
            except BadUpdate:  # only a batch with a bad row pays for checking its rows one by one
                good = [values for values in rows if _readable(kind, values)]
                unreadable[0] += len(rows) - len(good)
                rows = good
                view.load_batch(kind, query_id, batch_id, rows)
            loaded += len(rows)
        del table
        pa.default_memory_pool().release_unused()  # the Arrow buffers of a big start-up, back to the system
        bad = unreadable[0]
        versions[spec.name] = version
        if bad:
            log.warning("speed view skipped unreadable rows", extra={"table": spec.name, "rows": bad})
            if skipped is not None:
                skipped.labels(spec.name).inc(bad)
        log.info("speed view bootstrapped", extra={"table": spec.name, "version": version, "rows": loaded})
    return versions


def _batches(kind: str, table: pa.Table, unreadable: list[int]) -> Iterator[tuple[tuple[str, int], list[dict[str, Any]]]]:
    """The rows of ``table`` grouped by (query_id, batch_id), batches in order, each row in its message form
    (``schemas.speed_updates``: the same timestamps and maps as on the topic). One batch is held in Python
    at a time, so start-up's memory is the view's plus one batch. A row that has no message form is
    counted in ``unreadable[0]``."""
    as_message = progress_row if kind == KIND_PROGRESS else lambda values: row(kind, values)
    ordered = table.sort_by([("batch_id", "ascending"), ("query_id", "ascending")])  # stable: rows keep their order
    current: tuple[str, int] | None = None
    rows: list[dict[str, Any]] = []
    for values in _python_rows(ordered):
        entry = None if values is None else _entry(as_message, values)
        if entry is None:
            unreadable[0] += 1
            continue
        if entry[0] != current:
            if rows and current is not None:
                yield current, rows
            current, rows = entry[0], []
        rows.append(entry[1])
    if rows and current is not None:
        yield current, rows


def _entry(as_message: Callable[[dict[str, Any]], dict[str, Any]],
           values: dict[str, Any]) -> tuple[tuple[str, int], dict[str, Any]] | None:
    """(its batch, the row in message form), or None for a row the message form cannot hold."""
    try:
        return (str(values["query_id"]), int(values["batch_id"])), as_message(values)
    except (TypeError, ValueError, OverflowError):
        return None


def _python_rows(table: pa.Table) -> Iterator[dict[str, Any] | None]:
    """The table's rows as Python values, None for a row Python cannot hold (Arrow keeps timestamps
    past year 9999, ``datetime`` does not), looked for one row at a time only in its chunk."""
    for chunk in table.to_batches(max_chunksize=CHUNK_ROWS):
        try:
            yield from chunk.to_pylist()
        except (ValueError, OverflowError):
            for n in range(chunk.num_rows):
                try:
                    yield from chunk.slice(n, 1).to_pylist()
                except (ValueError, OverflowError):
                    yield None


def _readable(kind: str, values: dict[str, Any]) -> bool:
    try:
        decode_row(kind, values)
    except BadUpdate:
        return False
    return True
