"""Kafka client helpers every layer shares, built on kafka-python.

They work the same against the embedded single-node Kafka (``lambdarec broker``)
and a real Kafka cluster.
Offsets are never committed to consumer groups: readers assign partitions and
seek, and the Spark checkpoint or the caller keeps the positions.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.producer.future import RecordMetadata

from lambdarec.settings import Settings

log = logging.getLogger(__name__)

CLIENT_ID = "lambdarec"


class KafkaDeliveryError(RuntimeError):
    """A record was not acknowledged by the broker; nothing after it is assumed delivered."""


class BrokerUnavailableError(RuntimeError):
    """The broker did not answer a metadata request before the deadline."""


def make_producer(settings: Settings, **overrides) -> KafkaProducer:
    """An idempotent, acks=all producer tuned for low latency; values and keys are bytes.

    ``linger_ms`` is small so an API request is not held back waiting for a batch
    to fill, while bursts still share batches.
    """
    config = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": CLIENT_ID,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "batch_size": 64 * 1024,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 30_000,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(bootstrap_servers: str, **overrides) -> KafkaConsumer:
    """A group-less consumer for assign-and-seek reads: no commits, short waits.

    ``auto_offset_reset="none"`` makes an out-of-range position an error rather
    than a silent jump, so callers can report lost data.
    """
    config = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": CLIENT_ID,
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "none",
        "fetch_max_wait_ms": 10,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "request_timeout_ms": 10_000,
    }
    config.update(overrides)
    return KafkaConsumer(**config)


def send_all(
    producer: KafkaProducer,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    timeout_s: float = 30.0,
    partition: int | None = None,
) -> list[RecordMetadata]:
    """Send ``(key, value)`` records and wait until every one is acknowledged.

    Returns the record metadata in send order; raises KafkaDeliveryError naming
    the first record that failed, so a caller never reports success for a lost send.
    ``partition`` pins every record to one partition; by default the key decides.
    It waits on these records' futures only, never ``flush()``: on a producer that
    concurrent requests share, a flush would also wait for everyone else's records.
    """
    futures = []
    for index, (key, value) in enumerate(records):
        try:
            futures.append(producer.send(topic, key=key, value=value, partition=partition))
        except (KafkaError, ValueError) as exc:
            raise KafkaDeliveryError(
                f"record {index} to topic {topic!r} could not be sent ({exc}); "
                f"the {index} records before it may have been delivered"
            ) from exc
    deadline = time.monotonic() + timeout_s
    delivered = []
    for index, future in enumerate(futures):
        try:
            delivered.append(future.get(timeout=max(deadline - time.monotonic(), 0.001)))
        except KafkaError as exc:
            raise KafkaDeliveryError(
                f"record {index} of {len(futures)} to topic {topic!r} was not acknowledged: {exc}"
            ) from exc
    return delivered


def platform_topics(settings: Settings) -> list[str]:
    """Every topic the platform creates on start (names from settings; formats in ``schemas.topics``)."""
    return [settings.topic_events, settings.topic_consent, settings.topic_speed_updates]


def ensure_topics(
    settings: Settings,
    topics: Sequence[str],
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> list[str]:
    """Create the topics that are missing; returns those created.

    Each new topic gets ``partitions`` (default ``settings.topic_partitions``),
    ``replication_factor`` (default ``settings.topic_replication_factor``) and
    ``retention.ms``/``segment.ms`` from ``settings.topic_retention_ms``/``topic_segment_ms``. Existing topics are left
    as they are, so this is safe on every start and against a shared cluster.
    """
    partitions = partitions or settings.topic_partitions
    replication_factor = replication_factor or settings.topic_replication_factor
    configs = {"retention.ms": str(settings.topic_retention_ms), "segment.ms": str(settings.topic_segment_ms)}
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id=CLIENT_ID)
    try:
        existing = set(admin.list_topics())
        created = []
        for topic in (topic for topic in topics if topic not in existing):
            try:
                admin.create_topics([NewTopic(topic, partitions, replication_factor, topic_configs=configs)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    if created:
        log.info(
            "event=topics_created topics=%s partitions=%d replication_factor=%d retention_ms=%d",
            ",".join(created), partitions, replication_factor, settings.topic_retention_ms,
        )
    return created


def partition_end_offsets(
    consumer: KafkaConsumer, partitions: Sequence[TopicPartition], timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """The end (last offset + 1) of each partition: ``consumer.end_offsets``.

    Kept for callers written against the former embedded broker, which needed a
    workaround here; new code calls ``consumer.end_offsets`` directly. For those
    callers it still assigns ``consumer`` to ``partitions`` (positions are not
    moved), so they may seek right after.
    """
    partitions = list(partitions)
    if not partitions:
        return {}
    if set(consumer.assignment()) != set(partitions):
        consumer.assign(partitions)
    return dict(consumer.end_offsets(partitions, timeout_ms=int(timeout_s * 1000)))


def wait_for_broker(
    bootstrap_servers: str, timeout_s: float = 30.0, check: Callable[[], None] | None = None
) -> None:
    """Block until the broker answers a metadata request, or raise BrokerUnavailableError.

    ``check`` runs on every attempt and may raise to stop waiting early, e.g.
    when the broker process has already exited.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if check is not None:
            check()
        try:
            _probe_metadata(bootstrap_servers)
            return
        except (OSError, KafkaError) as exc:
            last_error = exc
        time.sleep(0.05)  # retry pacing between connection attempts, not synchronisation
    raise BrokerUnavailableError(
        f"Kafka at {bootstrap_servers} did not answer within {timeout_s}s: {last_error}"
    )


def _probe_metadata(bootstrap_servers: str) -> None:
    """One metadata round trip; a quick TCP connect first so a closed port fails fast."""
    first = bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
        pass
    consumer = make_consumer(bootstrap_servers, request_timeout_ms=2_000)
    try:
        consumer.topics()
    finally:
        consumer.close()
