"""Lake contract, Arrow side: atomic idempotent appends, pinned reads, refusal of unreadable tables."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from lambdarec.lake import Lake, UnsupportedTableError
from schemas.tables import DEAD_LETTER, EVENTS
from tests.support.lake import event_rows

pytestmark = pytest.mark.unit


def test_missing_table_reads_as_empty_with_schema(settings):
    lake = Lake(settings)
    assert lake.version(EVENTS) is None
    empty = lake.read_arrow(EVENTS)
    assert empty.num_rows == 0
    assert empty.schema == EVENTS.schema


def test_append_with_app_transaction_is_idempotent(settings):
    lake = Lake(settings)
    first = lake.append_arrow(EVENTS, event_rows(10), app_id="job", txn_version=0)
    assert first == 1  # version 0 is the create
    assert lake.append_arrow(EVENTS, event_rows(10), app_id="job", txn_version=0) is None
    assert lake.committed(EVENTS, "job", 0)
    assert not lake.committed(EVENTS, "job", 1)
    assert lake.read_arrow(EVENTS).num_rows == 10
    assert lake.append_arrow(EVENTS, event_rows(5, start=10), app_id="job", txn_version=1) == 2
    assert lake.read_arrow(EVENTS).num_rows == 15


def test_missing_columns_of_an_older_table_are_added_as_nulls(settings):
    lake = Lake(settings)
    older = dataclasses.replace(EVENTS, schema=pa.schema([f for f in EVENTS.schema if f.name != "device"]))
    lake.append_arrow(older, event_rows(3).drop_columns(["device"]))
    assert lake.add_missing_columns(EVENTS) == ["device"]
    assert lake.add_missing_columns(EVENTS) == []
    lake.append_arrow(EVENTS, event_rows(2, start=3))
    table = lake.read_arrow(EVENTS)
    assert table.num_rows == 5 and table.column("device").null_count == 3


def test_pinned_version_reads_that_snapshot(settings):
    lake = Lake(settings)
    lake.append_arrow(EVENTS, event_rows(4))
    pinned = lake.version(EVENTS)
    lake.append_arrow(EVENTS, event_rows(6, start=4))
    assert lake.read_arrow(EVENTS, version=pinned).num_rows == 4
    assert lake.read_arrow(EVENTS).num_rows == 10


def test_version_follows_commits_made_by_another_writer(settings):
    """A poller's lake keeps its snapshot between calls and moves it forward; other writers commit meanwhile."""
    poller, writer = Lake(settings), Lake(settings)
    assert poller.version(EVENTS) is None
    writer.append_arrow(EVENTS, event_rows(2))
    assert poller.version(EVENTS) == 1
    assert poller.version(EVENTS) == 1
    writer.append_arrow(EVENTS, event_rows(2, start=2))
    writer.append_arrow(EVENTS, event_rows(2, start=4))
    assert poller.version(EVENTS) == 3 == Lake(settings).version(EVENTS)


def test_dataset_is_queryable_from_duckdb(settings):
    lake = Lake(settings)
    lake.append_arrow(EVENTS, event_rows(8))
    events = lake.dataset(EVENTS)  # noqa: F841 - read by DuckDB below
    by_date = duckdb.sql(
        "select event_date, count(*) from events group by event_date order by event_date"
    ).fetchall()
    assert [count for _, count in by_date] == [4, 4]


def test_append_rejects_rows_missing_spec_columns(settings):
    lake = Lake(settings)
    with pytest.raises(KeyError):
        lake.append_arrow(DEAD_LETTER, pa.table({"raw": [b"x"]}))


def _write_foreign_table(path: Path, protocol: dict, configuration: dict) -> None:
    """A table as another Delta writer would leave it, with the given protocol and config."""
    log_dir = path / "_delta_log"
    log_dir.mkdir(parents=True)
    field_metadata = {}
    if "delta.columnMapping.mode" in configuration:
        field_metadata = {"delta.columnMapping.id": 1, "delta.columnMapping.physicalName": "col-1a2b"}
    schema = {
        "type": "struct",
        "fields": [{"name": "x", "type": "long", "nullable": True, "metadata": field_metadata}],
    }
    actions = [
        {"protocol": protocol},
        {
            "metaData": {
                "id": "00000000-0000-0000-0000-000000000001",
                "format": {"provider": "parquet", "options": {}},
                "schemaString": json.dumps(schema),
                "partitionColumns": [],
                "configuration": configuration,
                "createdTime": 0,
            }
        },
    ]
    (log_dir / "00000000000000000000.json").write_text("\n".join(json.dumps(a) for a in actions) + "\n")


@pytest.mark.parametrize(
    ("protocol", "configuration", "mentions"),
    [
        (
            {
                "minReaderVersion": 3,
                "minWriterVersion": 7,
                "readerFeatures": ["deletionVectors"],
                "writerFeatures": ["deletionVectors"],
            },
            {"delta.enableDeletionVectors": "true"},
            "deletionVectors",
        ),
        (
            {"minReaderVersion": 2, "minWriterVersion": 5},
            {"delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "1"},
            "column mapping",
        ),
    ],
)
def test_refuses_tables_with_reader_features_it_cannot_honour(settings, protocol, configuration, mentions):
    lake = Lake(settings)
    spec = EVENTS
    _write_foreign_table(Path(lake.uri(spec)), protocol, configuration)
    with pytest.raises(UnsupportedTableError, match=mentions):
        lake.open(spec)
    with pytest.raises(UnsupportedTableError):
        lake.read_arrow(spec)


def test_commit_version_finds_the_commit_of_a_transaction(settings):
    lake = Lake(settings)
    lake.append_arrow(EVENTS, event_rows(2), app_id="q", txn_version=0)
    lake.append_arrow(EVENTS, event_rows(2, start=2))
    lake.append_arrow(EVENTS, event_rows(2, start=4), app_id="q", txn_version=1)
    assert lake.commit_version(EVENTS, "q", 0) == 1
    assert lake.commit_version(EVENTS, "q", 1) == 3
    assert lake.commit_version(EVENTS, "q", 2) is None


def test_a_kept_open_appender_reports_the_version_its_commit_created(settings):
    lake = Lake(settings)
    appender = lake.appender(EVENTS)
    assert appender.append_once(event_rows(2), "q", 0) == 1
    lake.append_arrow(EVENTS, event_rows(2, start=2))  # another writer: version 2
    assert appender.append_once(event_rows(2, start=4), "q", 1) == 3
    assert appender.append_once(event_rows(2, start=4), "q", 1) == 3  # a replay: the original commit's version
    assert lake.version(EVENTS) == 3 and lake.read_arrow(EVENTS).num_rows == 6
