"""A speed query killed while it began its first batch starts again.

Spark writes a batch's offsets as a hidden temporary file and renames it; the fault
test's kill -9 once landed between the two on the features query's first batch, and
every restart failed with STATE_STORE_CHECKPOINT_LOCATION_NOT_EMPTY. Here a real
streaming query (Spark's file source, ``speed.job``'s own start) meets the
checkpoint such a kill leaves.
"""

from __future__ import annotations

import pytest

from speed.job import _start

pytestmark = pytest.mark.spark

LEFT_BY_KILL = ".0.c5f141e0-4c84-45ca-926d-3050aa10aa4e.tmp"  # the name Spark gave it in the fault test


def interrupted_checkpoint(tmp_path):
    offsets = tmp_path / "checkpoint" / "offsets"
    offsets.mkdir(parents=True)
    (offsets / LEFT_BY_KILL).write_text('v1\n{"batchWatermarkMs":0,"batchTimestampMs":0,"conf":{}}\n{"logOffset":0}\n')
    (offsets / f".{LEFT_BY_KILL}.crc").write_bytes(b"")
    (tmp_path / "checkpoint" / "commits").mkdir()
    return tmp_path / "checkpoint"


def test_a_query_killed_writing_its_first_offsets_starts_again_and_reads_everything(spark, tmp_path):
    source = tmp_path / "source"
    spark.range(5).write.parquet(str(source))
    checkpoint = interrupted_checkpoint(tmp_path)
    stream = spark.readStream.schema("id long").parquet(str(source))

    refused = stream.writeStream.option("checkpointLocation", str(checkpoint)).foreachBatch(
        lambda batch, batch_id: None).trigger(availableNow=True).start()
    with pytest.raises(Exception, match="STATE_STORE_CHECKPOINT_LOCATION_NOT_EMPTY"):
        refused.awaitTermination(120)  # what Spark does with that checkpoint alone

    seen: list[int] = []
    query = _start(stream, "first_batch_recovery", str(checkpoint),
                   lambda batch, batch_id: seen.extend(row.id for row in batch.collect()), 1000, available_now=True)
    query.awaitTermination(120)
    assert query.exception() is None
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert sorted(path.name for path in (checkpoint / "offsets").iterdir() if not path.name.startswith(".")) == ["0"]
