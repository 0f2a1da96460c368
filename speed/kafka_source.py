"""Kafka as a Spark Structured Streaming source, as a PySpark Python data source.

No Maven repository is reachable, so ``spark-sql-kafka`` cannot be loaded; this
source reads through kafka-python instead. Offsets ``{partition: offset}`` live
only in the Spark checkpoint (no consumer groups), and ``read`` assigns the
partition and seeks to the exact planned range, so a replayed micro-batch
returns the same records.

Usage::

    register(spark)
    spark.readStream.format("lambdarec_kafka")
        .option("bootstrap.servers", settings.bootstrap_servers)
        .option("topic", settings.topic_events)
        .option("maxOffsetsPerTrigger", 20000)
        .load()

Options: ``bootstrap.servers`` and ``topic`` (required), ``startingOffsets``
(earliest|latest, default earliest), ``maxOffsetsPerTrigger`` (default: no limit),
``failOnDataLoss`` (default true), ``maxRecordsPerPartition`` (most records one
Spark task reads, default 100000), ``pollTimeoutMs`` (longest wait for planned
records, default 60000).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa
from kafka import TopicPartition
from kafka.errors import OffsetOutOfRangeError
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxRows,
    SupportsTriggerAvailableNow,
)
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lambdarec.kafka_io import make_consumer, partition_end_offsets
from speed.kafka_offsets import DataLossError, admit, checked_start, from_json, split, to_json

log = logging.getLogger(__name__)

SOURCE_NAME = "lambdarec_kafka"

SCHEMA = StructType([
    StructField("key", BinaryType(), True),
    StructField("value", BinaryType(), True),
    StructField("topic", StringType(), False),
    StructField("partition", IntegerType(), False),
    StructField("offset", LongType(), False),
    StructField("timestamp", TimestampType(), True),
])

# What Spark expects read() to yield for SCHEMA (its worker compares schemas exactly).
ARROW_SCHEMA = pa.schema([
    pa.field("key", pa.binary()),
    pa.field("value", pa.binary()),
    pa.field("topic", pa.string(), nullable=False),
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("timestamp", pa.timestamp("us", tz="UTC")),
])

ARROW_BATCH_ROWS = 10_000


@dataclass(frozen=True)
class KafkaSourceOptions:
    """The parsed, validated reader options."""

    bootstrap_servers: str
    topic: str
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    fail_on_data_loss: bool = True
    max_records_per_partition: int = 100_000
    poll_timeout_ms: int = 60_000

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> "KafkaSourceOptions":
        opts = {str(k).lower(): str(v) for k, v in options.items()}
        for required in ("bootstrap.servers", "topic"):
            if not opts.get(required, "").strip():
                raise ValueError(f"{SOURCE_NAME}: option {required!r} is required")
        starting = opts.get("startingoffsets", "earliest").strip().lower()
        if starting not in ("earliest", "latest"):
            raise ValueError(f"{SOURCE_NAME}: startingOffsets must be 'earliest' or 'latest', got {starting!r}")
        max_per_trigger = opts.get("maxoffsetspertrigger")
        return cls(
            bootstrap_servers=opts["bootstrap.servers"].strip(),
            topic=opts["topic"].strip(),
            starting_offsets=starting,
            max_offsets_per_trigger=(
                None if max_per_trigger is None else _positive("maxOffsetsPerTrigger", max_per_trigger)
            ),
            fail_on_data_loss=_boolean("failOnDataLoss", opts.get("failondataloss", "true")),
            max_records_per_partition=_positive("maxRecordsPerPartition", opts.get("maxrecordsperpartition", "100000")),
            poll_timeout_ms=_positive("pollTimeoutMs", opts.get("polltimeoutms", "60000")),
        )


def _positive(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{SOURCE_NAME}: option {name} must be a positive integer, got {raw!r}")
    return value


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"{SOURCE_NAME}: option {name} must be 'true' or 'false', got {raw!r}")
    return lowered == "true"


@dataclass(frozen=True)
class KafkaInputPartition(InputPartition):
    """One Spark task: offsets ``[start, end)`` of one Kafka partition."""

    topic: str
    partition: int
    start: int
    end: int


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Plans micro-batches over a topic's partitions and reads exact offset ranges.

    The planning methods run in one long-lived driver-side Python worker and share
    a metadata consumer; ``read`` runs in executors with a consumer of its own.
    """

    def __init__(self, options: KafkaSourceOptions):
        self.options = options
        self._consumer = None
        self._latest: dict[int, int] | None = None
        self._target: dict[int, int] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_consumer": None}  # sockets do not travel to executors

    # -- planning (driver side) --------------------------------------------------

    def initialOffset(self) -> dict:
        earliest, end = self._bounds()
        return to_json(earliest if self.options.starting_offsets == "earliest" else end)

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        earliest, end = self._bounds()
        self._latest = end
        resume = self._resume_points(from_json(start), earliest, end)
        available = end
        if self._target is not None:
            available = {p: max(resume[p], min(end[p], self._target.get(p, resume[p]))) for p in end}
        return to_json(admit(resume, available, _max_rows(limit)))

    def getDefaultReadLimit(self) -> ReadLimit:
        if self.options.max_offsets_per_trigger is None:
            return ReadAllAvailable()
        return ReadMaxRows(self.options.max_offsets_per_trigger)

    def reportLatestOffset(self) -> dict | None:
        return None if self._latest is None else to_json(self._latest)

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = self._bounds()[1]

    def partitions(self, start: dict, end: dict) -> list[KafkaInputPartition]:
        start, end = from_json(start), from_json(end)
        earliest: dict[int, int] = {}
        if any(p not in start or start[p] > end[p] for p in end):
            earliest = self._bounds()[0]
        ranges = []
        for p in sorted(end):
            if p not in start:
                begin = earliest[p]
            elif start[p] > end[p]:
                begin = checked_start(
                    self.options.topic, p, start[p], earliest[p], end[p], self.options.fail_on_data_loss
                )
            else:
                begin = start[p]
            for lo, hi in split(begin, end[p], self.options.max_records_per_partition):
                ranges.append(KafkaInputPartition(self.options.topic, p, lo, hi))
        return ranges

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _resume_points(self, start: dict[int, int], earliest: dict[int, int], end: dict[int, int]) -> dict[int, int]:
        """Per partition, where the next batch begins; checks the checkpoint against the broker."""
        topic, fail = self.options.topic, self.options.fail_on_data_loss
        for p in sorted(set(start) - set(end)):
            message = f"data loss on topic {topic!r}: partition {p} (checkpointed offset {start[p]}) no longer exists"
            if fail:
                raise DataLossError(message + ". Set failOnDataLoss=false to skip it, or start a new checkpoint.")
            log.warning(
                "event=kafka_data_loss topic=%s partition=%d start=%d action=drop_partition", topic, p, start[p]
            )
        resume = {}
        for p in end:
            if p in start:
                resume[p] = checked_start(topic, p, start[p], earliest[p], end[p], fail)
            else:
                log.info("event=kafka_new_partition topic=%s partition=%d start=%d", topic, p, earliest[p])
                resume[p] = earliest[p]
        return resume

    def _bounds(self) -> tuple[dict[int, int], dict[int, int]]:
        """(earliest, end) offsets of every partition of the topic, from the broker now."""
        if self._consumer is None:
            self._consumer = make_consumer(self.options.bootstrap_servers, metadata_max_age_ms=30_000)
        consumer = self._consumer
        numbers = consumer.partitions_for_topic(self.options.topic)
        if not numbers:
            raise ValueError(
                f"{SOURCE_NAME}: topic {self.options.topic!r} does not exist on {self.options.bootstrap_servers}"
            )
        tps = [TopicPartition(self.options.topic, p) for p in sorted(numbers)]
        earliest = consumer.beginning_offsets(tps)
        end = partition_end_offsets(consumer, tps)
        return {tp.partition: earliest[tp] for tp in tps}, {tp.partition: end[tp] for tp in tps}

    # -- reading (executor side) ---------------------------------------------------

    def read(self, partition: KafkaInputPartition) -> Iterator[pa.RecordBatch]:
        consumer = make_consumer(self.options.bootstrap_servers, max_poll_records=ARROW_BATCH_ROWS)
        try:
            yield from read_range(consumer, partition, self.options)
        finally:
            consumer.close()


def read_range(consumer, part: KafkaInputPartition, options: KafkaSourceOptions) -> Iterator[pa.RecordBatch]:
    """Exactly the records at offsets ``[part.start, part.end)``, as Arrow batches.

    Offsets may have gaps (transaction markers, compaction); the consumer position,
    not a record count, says when the range is done. Records that are planned but
    missing from the broker are data loss.
    """
    tp = TopicPartition(part.topic, part.partition)
    consumer.assign([tp])
    consumer.seek(tp, part.start)
    rows = _Columns(part.topic, part.partition)
    next_offset = part.start
    last_progress = time.monotonic()
    while next_offset < part.end:
        try:
            fetched = consumer.poll(timeout_ms=100, max_records=ARROW_BATCH_ROWS).get(tp, [])
        except OffsetOutOfRangeError:
            earliest = consumer.beginning_offsets([tp])[tp]
            if next_offset >= earliest:
                _lost(part, next_offset, "the partition now ends before it", options.fail_on_data_loss)
                break
            _lost(part, next_offset, f"records before offset {earliest} were deleted", options.fail_on_data_loss)
            next_offset = min(earliest, part.end)
            consumer.seek(tp, next_offset)
            continue
        before = next_offset
        for record in fetched:
            if record.offset < next_offset:
                continue
            if record.offset >= part.end:
                break
            rows.append(record)
            next_offset = record.offset + 1
        next_offset = max(next_offset, min(consumer.position(tp), part.end))
        if len(rows) >= ARROW_BATCH_ROWS:
            yield rows.flush()
        if next_offset > before:
            last_progress = time.monotonic()
            continue
        highwater = consumer.highwater(tp)
        if highwater is not None and highwater <= next_offset:
            _lost(part, next_offset, f"the partition ends at {highwater}", options.fail_on_data_loss)
            break
        if time.monotonic() - last_progress > options.poll_timeout_ms / 1000:
            raise TimeoutError(
                f"{SOURCE_NAME}: no records from topic {part.topic!r} partition {part.partition} at offset "
                f"{next_offset} within {options.poll_timeout_ms} ms (planned up to {part.end})"
            )
    if len(rows):
        yield rows.flush()


def _lost(part: KafkaInputPartition, offset: int, detail: str, fail_on_data_loss: bool) -> None:
    """Raise DataLossError for planned records the broker no longer has, or log and go on."""
    message = (
        f"data loss on topic {part.topic!r} partition {part.partition}: the micro-batch planned offsets "
        f"[{part.start}, {part.end}) and is at {offset}, but {detail}"
    )
    if fail_on_data_loss:
        raise DataLossError(message + ". Set failOnDataLoss=false to read what is left, or start a new checkpoint.")
    log.warning("event=kafka_data_loss topic=%s partition=%d offset=%d planned_end=%d detail=%r action=skip",
                part.topic, part.partition, offset, part.end, detail)


class _Columns:
    """Column buffers for one partition's records, emitted as RecordBatches of ARROW_SCHEMA."""

    def __init__(self, topic: str, partition: int):
        self.topic, self.partition = topic, partition
        self._reset()

    def _reset(self) -> None:
        self.keys, self.values, self.offsets, self.timestamps = [], [], [], []

    def __len__(self) -> int:
        return len(self.offsets)

    def append(self, record) -> None:
        self.keys.append(record.key)
        self.values.append(record.value)
        self.offsets.append(record.offset)
        has_timestamp = record.timestamp is not None and record.timestamp >= 0
        self.timestamps.append(record.timestamp * 1000 if has_timestamp else None)

    def flush(self) -> pa.RecordBatch:
        n = len(self)
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array(self.keys, pa.binary()),
                pa.array(self.values, pa.binary()),
                pa.array([self.topic] * n, pa.string()),
                pa.array([self.partition] * n, pa.int32()),
                pa.array(self.offsets, pa.int64()),
                pa.array(self.timestamps, pa.timestamp("us", tz="UTC")),
            ],
            schema=ARROW_SCHEMA,
        )
        self._reset()
        return batch


def _max_rows(limit: ReadLimit) -> int | None:
    if isinstance(limit, ReadAllAvailable):
        return None
    if isinstance(limit, ReadMaxRows):
        return limit.max_rows
    raise ValueError(f"{SOURCE_NAME} admits ReadAllAvailable or ReadMaxRows, not {limit!r}")


class KafkaDataSource(DataSource):
    """``format("lambdarec_kafka")``: a Kafka topic as an unbounded table of records."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> StructType:
        return SCHEMA

    def streamReader(self, schema: StructType) -> KafkaStreamReader:
        if [(f.name, f.dataType) for f in schema] != [(f.name, f.dataType) for f in SCHEMA]:
            raise ValueError(f"{SOURCE_NAME} has a fixed schema {SCHEMA.simpleString()}; got {schema.simpleString()}")
        return KafkaStreamReader(KafkaSourceOptions.parse(self.options))


def register(spark) -> None:
    """Make ``format("lambdarec_kafka")`` available in this session."""
    spark.dataSource.register(KafkaDataSource)
