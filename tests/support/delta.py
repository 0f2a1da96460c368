"""Checks that a table written through delta-spark stays readable by delta-rs (serving, DuckDB)."""

from __future__ import annotations

import json

import pyarrow as pa
from deltalake import DeltaTable

from lambdarec.lake import Lake, check_readable


def canonical(table: pa.Table, spec) -> list[str]:
    """Rows as sorted JSON strings, so two readers' rows compare regardless of order and chunking."""
    rows = table.select(spec.columns).cast(spec.schema).to_pylist()
    return sorted(json.dumps(row, default=str, sort_keys=True) for row in rows)


def assert_delta_rs_reads_what_spark_reads(spark, lake: Lake, spec) -> int:
    table = DeltaTable(lake.uri(spec))
    check_readable(table, spec.name)
    protocol = table.protocol()
    features = set(protocol.reader_features or []) | set(protocol.writer_features or [])
    assert not features & {"deletionVectors", "columnMapping"}, (spec.name, features)
    assert protocol.min_reader_version < 3, (spec.name, protocol)
    configuration = table.metadata().configuration or {}
    assert configuration.get("delta.enableDeletionVectors", "false") == "false"
    assert configuration.get("delta.columnMapping.mode", "none") == "none"
    actions = pa.table(table.get_add_actions(flatten=True))
    if "deletionVector.storageType" in actions.column_names:
        assert actions.column("deletionVector.storageType").null_count == actions.num_rows
    through_rs = table.to_pyarrow_dataset().to_table()
    through_spark = lake.read_spark(spark, spec).toArrow()
    assert canonical(through_rs, spec) == canonical(through_spark, spec), spec.name
    return through_rs.num_rows
