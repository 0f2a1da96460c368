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

import itertools
import logging
import threading
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
REPORTS_POLL_S = 0.1  # the reporting thread's wait for a delivery report; it returns at the first


class BrokerUnavailable(RuntimeError):
    """The broker did not take the events; the client should retry the whole request."""


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    dropped_no_consent: list[str] = field(default_factory=list)


class _Delivery:
    """The delivery reports of one request's records, counted down on the producer's reporting thread."""

    def __init__(self, expected: int):
        self.expected = expected
        self._reported = itertools.count(1)  # next() is atomic under the GIL: no lock per record
        self.timestamp_ms = -1  # the broker's time of the last record acknowledged
        self.error: str | None = None
        self.done = threading.Event()

    def on_delivery(self, error: KafkaError | None, message) -> None:
        if error is not None:
            self.error = self.error or error.str()
        else:
            self.timestamp_ms = message.timestamp()[1]
        if next(self._reported) == self.expected:
            self.done.set()


class _ReportingProducer:
    """A librdkafka producer with the one thread that serves its delivery reports.

    Requests only wait on their own ``_Delivery``: threads polling the producer in
    turns would each wake every few milliseconds to take the GIL.
    """

    def __init__(self, config: dict):
        self.producer = Producer(config)
        self._stop = threading.Event()
        threading.Thread(target=self._serve_reports, name="ingest-delivery-reports", daemon=True).start()

    def _serve_reports(self) -> None:
        # A discarded producer still reports what other requests sent through it: every record gets
        # its report (or its error) within message.timeout.ms.
        while not (self._stop.is_set() and len(self.producer) == 0):
            self.producer.poll(REPORTS_POLL_S)

    def stop(self) -> None:
        """Stop serving reports once every record sent has had its report."""
        self._stop.set()


class Ingestor:
    """Owns the process's one Kafka producer, created on first use."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._producer: _ReportingProducer | None = None
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
            if not delivery.done.wait(DELIVERY_TIMEOUT_S):
                raise BrokerUnavailable(f"{delivery.expected} records not all acknowledged after "
                                        f"{DELIVERY_TIMEOUT_S:g} s")
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
                reporting = _ReportingProducer({
                    "bootstrap.servers": self.settings.bootstrap_servers,
                    "client.id": "lambdarec-serving-ingest",
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": LINGER_MS,
                    "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
                    "logger": log,
                })
                try:  # no broker: a 503 now, not after the timeout
                    reporting.producer.list_topics(timeout=BROKER_WAIT_MS / 1000)
                except KafkaException:
                    reporting.stop()
                    raise
                self._producer = reporting
            return self._producer.producer

    def _discard_producer(self) -> None:
        """Drop a producer that failed, so the next request starts from a clean state."""
        with self._lock:
            reporting, self._producer = self._producer, None
        if reporting is not None:
            reporting.stop()

    def close(self) -> None:
        with self._lock:
            reporting, self._producer = self._producer, None
        if reporting is not None:
            reporting.stop()
            reporting.producer.flush(5)
