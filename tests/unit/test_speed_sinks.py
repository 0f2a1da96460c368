"""The events sink's Arrow-side late marking, driven directly: no Spark, no broker."""

from __future__ import annotations

import pyarrow as pa
import pytest

from speed.sinks import late_marked
from speed.transforms import LATE

pytestmark = pytest.mark.unit


def rows(reasons: list[str | None], ingest_us: list[int]) -> pa.Table:
    return pa.table({"reason": pa.array(reasons, pa.string()),
                     "ingest_ts": pa.array(ingest_us, pa.timestamp("us", tz="UTC"))})


def test_only_valid_records_before_the_cutoff_become_late():
    table = rows([None, None, None, "malformed_json"], [999, 1000, 1001, 5])
    assert late_marked(table, 1000).to_pylist() == [LATE, None, None, "malformed_json"]


def test_without_a_frontier_nothing_is_late():
    table = rows([None, "oversize"], [1, 2])
    assert late_marked(table, None).to_pylist() == [None, "oversize"]


def test_an_empty_batch_stays_empty():
    assert late_marked(rows([], []), 1000).to_pylist() == []
