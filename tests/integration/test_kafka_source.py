"""The lambdarec_kafka stream source against a real Tansu broker, driven directly and from Spark."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

from lambdarec import kafka_io
from lambdarec.broker import EmbeddedBroker
from speed.kafka_offsets import DataLossError
from speed.kafka_source import KafkaInputPartition, KafkaSourceOptions, KafkaStreamReader, register

pytestmark = pytest.mark.integration

TOPIC = "events"


def produce(settings, partition: int, values: list[str], batches: int = 1) -> None:
    """Send ``values`` to one partition in ``batches`` separate record batches."""
    producer = kafka_io.make_producer(settings)
    try:
        size = -(-len(values) // batches)
        for lo in range(0, len(values), size):
            chunk = [(f"k{partition}".encode(), v.encode()) for v in values[lo:lo + size]]
            kafka_io.send_all(producer, TOPIC, chunk, partition=partition)
    finally:
        producer.close()


def make_reader(settings, **options: str) -> KafkaStreamReader:
    return KafkaStreamReader(
        KafkaSourceOptions.parse({"bootstrap.servers": settings.bootstrap_servers, "topic": TOPIC, **options})
    )


def read_all(reader: KafkaStreamReader, start: dict, end: dict) -> pa.Table:
    batches = [batch for part in reader.partitions(start, end) for batch in reader.read(part)]
    return pa.Table.from_batches(batches).sort_by([("partition", "ascending"), ("offset", "ascending")])


@pytest.fixture
def reader(broker_settings):
    source = make_reader(broker_settings)
    yield source
    source.stop()


def test_initial_offsets_are_earliest_or_latest(broker_settings, reader):
    produce(broker_settings, 0, [f"a{i}" for i in range(5)])
    latest = make_reader(broker_settings, startingOffsets="latest")
    try:
        assert reader.initialOffset() == {"0": 0, "1": 0}
        assert latest.initialOffset() == {"0": 5, "1": 0}
    finally:
        latest.stop()


def test_latest_offset_includes_tansus_newest_batch(broker_settings, reader):
    produce(broker_settings, 0, [f"a{i}" for i in range(30)], batches=3)
    assert reader.latestOffset({"0": 0, "1": 0}, ReadAllAvailable()) == {"0": 30, "1": 0}
    assert reader.reportLatestOffset() == {"0": 30, "1": 0}


def test_read_returns_exactly_the_planned_records(broker_settings, reader):
    produce(broker_settings, 0, [f"a{i}" for i in range(12)], batches=2)
    produce(broker_settings, 1, [f"b{i}" for i in range(7)])
    start = reader.initialOffset()
    end = reader.latestOffset(start, ReadAllAvailable())
    table = read_all(reader, start, end)
    assert table.column("value").to_pylist() == [f"a{i}".encode() for i in range(12)] + [
        f"b{i}".encode() for i in range(7)
    ]
    assert table.column("offset").to_pylist() == list(range(12)) + list(range(7))
    assert set(table.column("topic").to_pylist()) == {TOPIC}
    assert table.column("key").to_pylist()[:1] == [b"k0"]
    assert table.column("timestamp").null_count == 0


def test_admission_limit_caps_each_batch_and_the_next_one_continues(broker_settings, reader):
    produce(broker_settings, 0, [f"a{i}" for i in range(20)])
    produce(broker_settings, 1, [f"b{i}" for i in range(5)])
    start = reader.initialOffset()
    first = reader.latestOffset(start, ReadMaxRows(10))
    assert sum(first.values()) == 10 and first["0"] > first["1"] >= 1
    second = reader.latestOffset(first, ReadMaxRows(100))
    assert second == {"0": 20, "1": 5}
    records = read_all(reader, start, first).num_rows + read_all(reader, first, second).num_rows
    assert records == 25


def test_default_limit_comes_from_max_offsets_per_trigger(broker_settings):
    limited = make_reader(broker_settings, maxOffsetsPerTrigger="3")
    try:
        produce(broker_settings, 0, [f"a{i}" for i in range(10)])
        start = limited.initialOffset()
        assert limited.latestOffset(start, limited.getDefaultReadLimit()) == {"0": 3, "1": 0}
    finally:
        limited.stop()


def test_replaying_a_batch_returns_identical_records_even_after_more_arrive(broker_settings, reader):
    produce(broker_settings, 0, [f"a{i}" for i in range(9)], batches=3)
    start = reader.initialOffset()
    end = reader.latestOffset(start, ReadAllAvailable())
    first = read_all(reader, start, end)
    produce(broker_settings, 0, [f"late{i}" for i in range(4)])
    again = read_all(make_reader(broker_settings), start, end)
    assert again.equals(first) and first.num_rows == 9


def test_available_now_stops_at_the_offsets_seen_when_it_began(broker_settings, reader):
    produce(broker_settings, 0, ["a", "b"])
    reader.prepareForTriggerAvailableNow()
    produce(broker_settings, 0, ["c"])
    assert reader.latestOffset({"0": 0, "1": 0}, ReadAllAvailable()) == {"0": 2, "1": 0}


def test_broker_restarted_empty_is_reported_as_data_loss(embedded_broker):
    settings = embedded_broker.settings
    produce(settings, 0, [f"a{i}" for i in range(6)])
    checkpointed = {"0": 6, "1": 0}
    embedded_broker.stop()
    with EmbeddedBroker(settings):
        strict = make_reader(settings)
        lenient = make_reader(settings, failOnDataLoss="false")
        try:
            with pytest.raises(DataLossError, match=r"topic 'events' partition 0: checkpointed offset 6 .*end 0"):
                strict.latestOffset(checkpointed, ReadAllAvailable())
            produce(settings, 0, ["fresh0", "fresh1"])
            end = lenient.latestOffset(checkpointed, ReadAllAvailable())
            assert end == {"0": 2, "1": 0}
            assert read_all(lenient, checkpointed, end).column("value").to_pylist() == [b"fresh0", b"fresh1"]
        finally:
            strict.stop()
            lenient.stop()


def test_planned_records_missing_at_read_time_are_data_loss(broker_settings, reader):
    produce(broker_settings, 0, [f"a{i}" for i in range(4)])
    beyond = KafkaInputPartition(TOPIC, 0, 0, 10)
    with pytest.raises(DataLossError, match=r"planned offsets \[0, 10\).*ends at 4"):
        list(reader.read(beyond))
    lenient = make_reader(broker_settings, failOnDataLoss="false")
    assert sum(batch.num_rows for batch in lenient.read(beyond)) == 4


def test_a_missing_topic_is_a_clear_error(broker_settings):
    missing = KafkaStreamReader(
        KafkaSourceOptions.parse({"bootstrap.servers": broker_settings.bootstrap_servers, "topic": "nope"})
    )
    try:
        with pytest.raises(ValueError, match="topic 'nope' does not exist"):
            missing.initialOffset()
    finally:
        missing.stop()


def start_query(spark, settings, name: str, sink: list, **trigger):
    """A query through the source whose micro-batches append (partition, offset, value) rows to ``sink``."""
    stream = (
        spark.readStream.format("lambdarec_kafka")
        .option("bootstrap.servers", settings.bootstrap_servers)
        .option("topic", TOPIC)
        .option("maxOffsetsPerTrigger", 8)
        .load()
    )

    def collect(batch, batch_id):
        sink.extend((r.partition, r.offset, bytes(r.value).decode()) for r in batch.collect())

    return (
        stream.writeStream.foreachBatch(collect)
        .option("checkpointLocation", f"{settings.checkpoint_root}/{name}")
        .trigger(**trigger).start()
    )


@pytest.mark.spark
def test_spark_available_now_query_reads_every_record_once_across_restarts(spark, broker_settings):
    register(spark)
    produce(broker_settings, 0, [f"a{i}" for i in range(13)], batches=2)
    produce(broker_settings, 1, [f"b{i}" for i in range(6)])
    rows: list[tuple] = []
    query = start_query(spark, broker_settings, "once", rows, availableNow=True)
    assert query.awaitTermination(180) and query.exception() is None
    expected = [(0, i, f"a{i}") for i in range(13)] + [(1, i, f"b{i}") for i in range(6)]
    assert sorted(rows) == expected
    assert len([p for p in query.recentProgress if p["numInputRows"]]) >= 3  # 19 records, 8 per trigger

    produce(broker_settings, 1, ["b6", "b7"])
    rows.clear()
    resumed = start_query(spark, broker_settings, "once", rows, availableNow=True)
    assert resumed.awaitTermination(180) and resumed.exception() is None
    assert sorted(rows) == [(1, 6, "b6"), (1, 7, "b7")]  # from the checkpoint on, nothing twice


@pytest.mark.spark
def test_spark_continuous_query_sees_records_produced_while_it_runs(spark, broker_settings):
    register(spark)
    rows: list[tuple] = []
    query = start_query(spark, broker_settings, "live", rows, processingTime="200 milliseconds")
    try:
        produce(broker_settings, 0, [f"live{i}" for i in range(10)])  # one batch: Tansu's quirk case
        deadline = time.monotonic() + 120
        while len(rows) < 10 and time.monotonic() < deadline and query.isActive:
            query.processAllAvailable()
        assert sorted(rows) == [(0, i, f"live{i}") for i in range(10)]
    finally:
        query.stop()
    assert query.exception() is None
