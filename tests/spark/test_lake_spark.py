"""Lake contract, Spark side: delta-spark appends (idempotent by app transaction), time-travel reads."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from lambdarec.lake import Lake
from schemas.tables import EVENTS, USER_FACTORS
from tests.support.lake import event_rows

pytestmark = pytest.mark.spark


def test_spark_append_is_atomic_idempotent_and_partitioned(settings, spark):
    lake = Lake(settings)
    df = spark.createDataFrame(event_rows(12))
    version = lake.append_spark(EVENTS, df, app_id="speed-q1", txn_version=7)
    assert version == 1
    assert lake.append_spark(EVENTS, df, app_id="speed-q1", txn_version=7) is None
    assert lake.append_spark(EVENTS, df, app_id="speed-q1", txn_version=3) is None
    assert lake.version(EVENTS) == 1

    arrow = lake.read_arrow(EVENTS)
    assert arrow.num_rows == 12
    assert sorted(arrow.column("event_id").to_pylist()) == sorted(f"e{i}" for i in range(12))
    assert set(lake.open(EVENTS).partitions()[0].keys()) == {"event_date"}
    back = lake.read_spark(spark, EVENTS)
    assert back.columns == EVENTS.columns
    assert back.count() == 12
    assert back.select("event_date").distinct().count() == 2
    assert back.filter("context['campaign'] = 'x'").count() == 12


def test_the_commit_is_delta_sparks_and_carries_the_transaction(settings, spark):
    lake = Lake(settings)
    version = lake.append_spark(EVENTS, spark.createDataFrame(event_rows(4)), app_id="job", txn_version=5)
    table = DeltaTable(lake.uri(EVENTS))
    assert table.transaction_version("job") == 5
    assert "Delta-Lake" in table.history(1)[0]["engineInfo"]
    assert lake.commit_version(EVENTS, "job", 5) == version
    assert lake.committed(EVENTS, "job", 5) and not lake.committed(EVENTS, "job", 6)


def test_delta_skips_a_write_whose_transaction_another_writer_recorded(settings, spark, monkeypatch):
    """The check before the write can race another writer; Delta's own txn check then skips it."""
    lake = Lake(settings)
    df = spark.createDataFrame(event_rows(3))
    assert lake.append_spark(EVENTS, df, app_id="job", txn_version=1) == 1
    monkeypatch.setattr(Lake, "committed", lambda *args: False)
    assert lake.append_spark(EVENTS, df, app_id="job", txn_version=1) is None
    assert lake.version(EVENTS) == 1 and lake.read_arrow(EVENTS).num_rows == 3


def test_spark_reads_a_pinned_version_by_time_travel(settings, spark):
    lake = Lake(settings)
    lake.append_arrow(EVENTS, event_rows(5))
    pinned = lake.version(EVENTS)
    lake.append_spark(EVENTS, spark.createDataFrame(event_rows(7, start=5)))
    assert lake.read_spark(spark, EVENTS, version=pinned).count() == 5
    assert lake.read_spark(spark, EVENTS).count() == 12


def test_a_missing_table_reads_as_empty_with_the_specs_schema(settings, spark):
    lake = Lake(settings)
    empty = lake.read_spark(spark, USER_FACTORS)
    assert empty.columns == USER_FACTORS.columns and empty.count() == 0


def test_uncommitted_spark_files_are_invisible(settings, spark):
    """A job killed after writing Parquet but before the commit leaves no visible rows."""
    lake = Lake(settings)
    lake.ensure(EVENTS)
    orphan = spark.createDataFrame(event_rows(3))
    orphan.write.partitionBy("event_date").parquet(f"{lake.uri(EVENTS)}/crashed-write")
    assert lake.read_arrow(EVENTS).num_rows == 0
    assert lake.read_spark(spark, EVENTS).count() == 0


def test_empty_batch_still_records_its_transaction(settings, spark):
    lake = Lake(settings)
    empty = spark.createDataFrame([], schema=lake.read_spark(spark, USER_FACTORS).schema)
    assert lake.append_spark(USER_FACTORS, empty, app_id="train", txn_version=1) == 1
    assert lake.committed(USER_FACTORS, "train", 1)
    assert lake.read_arrow(USER_FACTORS).num_rows == 0


def test_missing_columns_are_a_clear_error(settings, spark):
    lake = Lake(settings)
    df = spark.createDataFrame([("e1",)], ["event_id"])
    with pytest.raises(ValueError, match="lacks columns"):
        lake.append_spark(EVENTS, df)
