"""Offset logic of the Kafka stream source, driven directly: no broker, no JVM."""

from __future__ import annotations

import pickle

import pytest
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxFiles, ReadMaxRows

from speed.kafka_offsets import DataLossError, admit, checked_start, from_json, split, to_json
from speed.kafka_source import (
    ARROW_SCHEMA,
    SCHEMA,
    KafkaInputPartition,
    KafkaSourceOptions,
    KafkaStreamReader,
    _max_rows,
)

pytestmark = pytest.mark.unit

OPTIONS = {"bootstrap.servers": "127.0.0.1:1", "topic": "events"}


def reader(**extra: str) -> KafkaStreamReader:
    return KafkaStreamReader(KafkaSourceOptions.parse({**OPTIONS, **extra}))


def test_offsets_round_trip_through_checkpoint_json():
    offsets = {1: 7, 0: 12}
    assert to_json(offsets) == {"0": 12, "1": 7}
    assert from_json(to_json(offsets)) == offsets


def test_malformed_checkpoint_offset_is_a_clear_error():
    with pytest.raises(ValueError, match="not a Kafka source offset"):
        from_json({"zero": 3})


def test_admit_without_limit_takes_everything_available():
    assert admit({0: 5, 1: 0}, {0: 50, 1: 3}, None) == {0: 50, 1: 3}


def test_admit_never_moves_backwards_when_nothing_is_new():
    assert admit({0: 5, 1: 3}, {0: 5, 1: 3}, 10) == {0: 5, 1: 3}


def test_admit_shares_the_limit_by_backlog_and_spends_it_exactly():
    end = admit({0: 0, 1: 0, 2: 0}, {0: 900, 1: 90, 2: 10}, 100)
    assert sum(end.values()) == 100
    assert end == {0: 90, 1: 9, 2: 1}


def test_admit_gives_the_rounding_remainder_so_a_batch_always_progresses():
    end = admit({0: 10, 1: 20}, {0: 11, 1: 21}, 1)
    assert sum(end[p] - s for p, s in {0: 10, 1: 20}.items()) == 1
    assert all(end[p] <= limit for p, limit in {0: 11, 1: 21}.items())


def test_admit_rejects_a_non_positive_limit():
    with pytest.raises(ValueError):
        admit({0: 0}, {0: 5}, 0)


@pytest.mark.parametrize("start", [3, 0, 10])
def test_checked_start_keeps_offsets_the_broker_still_holds(start):
    assert checked_start("events", 0, start, earliest=0, end=10, fail_on_data_loss=True) == start


@pytest.mark.parametrize(
    ("start", "reason"), [(2, "below the earliest"), (25, "beyond the end")]
)
def test_checked_start_reports_data_loss_naming_topic_partition_and_offsets(start, reason):
    with pytest.raises(DataLossError) as info:
        checked_start("events", 1, start, earliest=5, end=20, fail_on_data_loss=True)
    message = str(info.value)
    assert "'events'" in message and "partition 1" in message and reason in message
    assert f"offset {start}" in message and "earliest 5" in message and "end 20" in message


def test_checked_start_resets_to_earliest_when_data_loss_is_allowed():
    assert checked_start("events", 0, 25, earliest=5, end=20, fail_on_data_loss=False) == 5


def test_split_cuts_large_ranges_into_consecutive_pieces():
    assert split(10, 35, 10) == [(10, 20), (20, 30), (30, 35)]
    assert split(4, 4, 10) == []


def test_partitions_plan_one_task_per_partition_with_records():
    planned = reader().partitions({"0": 5, "1": 7, "2": 0}, {"0": 9, "1": 7, "2": 3})
    assert planned == [KafkaInputPartition("events", 0, 5, 9), KafkaInputPartition("events", 2, 0, 3)]


def test_partitions_split_a_partition_above_max_records():
    planned = reader(maxRecordsPerPartition="4").partitions({"0": 0}, {"0": 10})
    assert [(p.start, p.end) for p in planned] == [(0, 4), (4, 8), (8, 10)]


def test_partitions_are_the_same_when_a_batch_is_replayed():
    first = reader().partitions({"0": 3, "1": 1}, {"0": 8, "1": 6})
    again = pickle.loads(pickle.dumps(reader())).partitions({"0": 3, "1": 1}, {"0": 8, "1": 6})
    assert first == again


def test_default_read_limit_follows_max_offsets_per_trigger():
    assert reader().getDefaultReadLimit() == ReadAllAvailable()
    assert reader(maxOffsetsPerTrigger="500").getDefaultReadLimit() == ReadMaxRows(500)


def test_read_limits_other_than_rows_are_refused_clearly():
    assert _max_rows(ReadAllAvailable()) is None
    assert _max_rows(ReadMaxRows(7)) == 7
    with pytest.raises(ValueError, match="ReadMaxFiles"):
        _max_rows(ReadMaxFiles(3))


def test_reader_pickles_without_its_driver_consumer():
    source = reader()
    source._consumer = object()  # stands in for an open socket; it must not travel
    assert pickle.loads(pickle.dumps(source))._consumer is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"topic": ""}, "'topic' is required"),
        ({"bootstrap.servers": " "}, "'bootstrap.servers' is required"),
        ({"startingOffsets": "middle"}, "startingOffsets"),
        ({"maxOffsetsPerTrigger": "0"}, "maxOffsetsPerTrigger"),
        ({"maxOffsetsPerTrigger": "lots"}, "maxOffsetsPerTrigger"),
        ({"failOnDataLoss": "maybe"}, "failOnDataLoss"),
    ],
)
def test_bad_options_are_rejected_with_the_option_named(bad, message):
    with pytest.raises(ValueError, match=message):
        KafkaSourceOptions.parse({**OPTIONS, **bad})


def test_options_are_case_insensitive_with_documented_defaults():
    parsed = KafkaSourceOptions.parse({"BOOTSTRAP.SERVERS": "h:1", "Topic": "t", "failondataloss": "FALSE"})
    assert (parsed.bootstrap_servers, parsed.topic, parsed.fail_on_data_loss) == ("h:1", "t", False)
    assert parsed.starting_offsets == "earliest" and parsed.max_offsets_per_trigger is None


def test_arrow_batches_match_what_spark_expects_for_the_schema():
    assert ARROW_SCHEMA.equals(to_arrow_schema(SCHEMA, timezone="UTC"))
