"""The ingestion edge: pseudonymise events and produce them to the ``events`` topic (consent changes
to the ``consent`` topic).

A request is acknowledged only after the broker acknowledged every record
(acks=all, idempotent producer), so a 202 never hides a lost event. A retry after
a failure may duplicate events on the topic; the speed layer dedupes by event_id.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.producer.future import RecordMetadata
from kafka.errors import KafkaError

from lambdarec.kafka_io import KafkaDeliveryError, make_producer, send_all
from lambdarec.pseudonym import pseudonymise
from lambdarec.settings import Settings
from schemas.consent import ConsentChange
from schemas.events import Event

log = logging.getLogger(__name__)

BROKER_WAIT_MS = 5_000  # how long a request waits for a broker before it gets a 503
DELIVERY_TIMEOUT_S = 15.0


class BrokerUnavailable(RuntimeError):
    """The broker did not take the events; the client should retry the whole request."""


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    dropped_no_consent: list[str] = field(default_factory=list)


class Ingestor:
    """Owns the process's one Kafka producer, created on first use."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def publish(self, events: list[Event]) -> IngestResult:
        """Produce every consented event and wait for the broker's acknowledgement."""
        result = IngestResult()
        received_at = datetime.now(UTC)
        records = []
        for event in events:
            if event.context.consent is False:
                result.dropped_no_consent.append(str(event.event_id))
                continue
            pseudonym = pseudonymise(event.user_id, self.settings.pseudonym_key)
            message = event.to_message(pseudonym, received_at)
            records.append((pseudonym.encode(), json.dumps(message).encode()))
            result.accepted.append(str(event.event_id))
        if records:
            self._send(self.settings.topic_events, records)
        return result

    def publish_consent(self, change: ConsentChange) -> datetime:
        """Produce one consent change, keyed by the user, and wait for the broker; its Kafka timestamp."""
        [delivered] = self._send(self.settings.topic_consent, [(change.user_id.encode(), change.to_message())])
        return datetime.fromtimestamp(delivered.timestamp / 1000, UTC)

    def _send(self, topic: str, records: list[tuple[bytes, bytes]]) -> list[RecordMetadata]:
        try:
            return send_all(self._get_producer(), topic, records, DELIVERY_TIMEOUT_S)
        except (KafkaError, KafkaDeliveryError) as exc:
            self._discard_producer()
            log.warning("produce failed", extra={"topic": topic, "error": str(exc)})
            raise BrokerUnavailable(str(exc)) from exc

    def _get_producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = make_producer(
                    self.settings,
                    client_id="lambdarec-serving-ingest",
                    max_block_ms=BROKER_WAIT_MS,
                    bootstrap_timeout_ms=BROKER_WAIT_MS,
                )
            return self._producer

    def _discard_producer(self) -> None:
        """Drop a producer that failed, so the next request starts from a clean state."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=0)

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)
