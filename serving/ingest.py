"""The ingestion edge: pseudonymise events and produce them to the ``events`` topic (consent changes
to the ``consent`` topic).

A request is acknowledged only after the broker acknowledged every one of its
records (acks=all, idempotent producer), so a 202 never hides a lost event; it
waits for its own records only, never for other requests'. A retry after a
failure may duplicate events on the topic; the speed layer dedupes by event_id.

This producer is librdkafka's (confluent-kafka), the rest of the platform uses
kafka-python: measured on 2 cores (bench/ingest.py, README), kafka-python spent
about 70 µs of CPU per record, more than validating and pseudonymising an event,
and librdkafka about a fifth of that.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from lambdarec.pseudonym import pseudonymise
from lambdarec.settings import Settings
from schemas.consent import ConsentChange
from schemas.events import Event

log = logging.getLogger(__name__)

BROKER_WAIT_MS = 5_000  # how long a request waits for a broker before it gets a 503
DELIVERY_TIMEOUT_S = 15.0
LINGER_MS = 1  # concurrent requests' records share batches; one event waits at most this long
POLL_S = 0.005


class BrokerUnavailable(RuntimeError):
    """The broker did not take the events; the client should retry the whole request."""


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    dropped_no_consent: list[str] = field(default_factory=list)


class _Delivery:
    """The delivery reports of one request's records, counted down as librdkafka serves them (in
    whichever request's thread polls)."""

    def __init__(self, expected: int):
        self.left = expected
        self.timestamp_ms = -1  # the broker's time of the last record acknowledged
        self.error: str | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()

    def on_delivery(self, error: KafkaError | None, message) -> None:
        with self._lock:
            if error is not None:
                self.error = self.error or error.str()
            else:
                self.timestamp_ms = message.timestamp()[1]
            self.left -= 1
            if self.left == 0:
                self.done.set()


class Ingestor:
    """Owns the process's one Kafka producer, created on first use."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def publish(self, events: list[Event]) -> IngestResult:
        """Produce every consented event and wait for the broker's acknowledgement."""
        result = IngestResult()
        received_at = datetime.now(UTC).isoformat()
        records = []
        for event in events:
            if event.context.consent is False:
                result.dropped_no_consent.append(str(event.event_id))
                continue
            pseudonym = pseudonymise(event.user_id, self.settings.pseudonym_key)
            message = event.to_message(pseudonym, received_at)
            records.append((pseudonym.encode(), orjson.dumps(message)))
            result.accepted.append(message["event_id"])
        if records:
            self._send(self.settings.topic_events, records)
        return result

    def publish_consent(self, change: ConsentChange) -> datetime:
        """Produce one consent change, keyed by the user, and wait for the broker; its Kafka timestamp."""
        timestamp_ms = self._send(self.settings.topic_consent, [(change.user_id.encode(), change.to_message())])
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)

    def _send(self, topic: str, records: list[tuple[bytes, bytes]]) -> int:
        """Produce ``records`` and wait for their delivery reports; the broker's time of the last one (ms)."""
        delivery = _Delivery(len(records))
        try:
            producer = self._get_producer()
            for key, value in records:
                producer.produce(topic, value, key, on_delivery=delivery.on_delivery)
            deadline = time.monotonic() + DELIVERY_TIMEOUT_S
            while not delivery.done.is_set():  # serves every request's reports; ours set ``done``
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"{delivery.left} of {len(records)} records unacknowledged after "
                                            f"{DELIVERY_TIMEOUT_S:g} s")
                producer.poll(POLL_S)
            if delivery.error is not None:
                raise BrokerUnavailable(delivery.error)
            return delivery.timestamp_ms
        except (KafkaException, BufferError, BrokerUnavailable) as exc:
            self._discard_producer()
            log.warning("produce failed", extra={"topic": topic, "error": str(exc)})
            raise BrokerUnavailable(str(exc)) from exc

    def _get_producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                producer = Producer({
                    "bootstrap.servers": self.settings.bootstrap_servers,
                    "client.id": "lambdarec-serving-ingest",
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": LINGER_MS,
                    "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
                    "logger": log,
                })
                producer.list_topics(timeout=BROKER_WAIT_MS / 1000)  # no broker: a 503 now, not after the timeout
                self._producer = producer
            return self._producer

    def _discard_producer(self) -> None:
        """Drop a producer that failed, so the next request starts from a clean state."""
        with self._lock:
            self._producer = None

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(5)
