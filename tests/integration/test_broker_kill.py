"""``lambdarec broker`` killed with SIGKILL, as a whole, under a steady idempotent stream.

The component is the ``lambdarec broker`` process started the way the demo
starts it (``processes.start_child``); its Kafka JVM must die with it, and a
restart on the same root must hold every record the broker acknowledged, each
exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from kafka import TopicPartition

from lambdarec import kafka_io
from lambdarec.processes import wait_for
from lambdarec.settings import Settings
from tests.support.broker_component import Component, port_free

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = 3
SEND_BATCH = 20
ACKS_BETWEEN_KILLS = 300


@pytest.fixture
def component(tmp_path):
    component = Component(tmp_path)
    yield component
    if component.child is not None and component.child.alive():
        component.child.stop(timeout_s=60)


class SteadyProducer(threading.Thread):
    """Sends ids 0, 1, 2, ... in batches; a batch that fails is sent again until acknowledged."""

    def __init__(self, settings: Settings):
        super().__init__(daemon=True)
        self.settings = settings
        self.acknowledged: set[int] = set()
        self.resends = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def acked(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def run(self) -> None:
        # The producer's own retries (same sequence numbers, so the broker dedupes them) outlast a
        # restart; a batch is resent by hand only if those give up.
        producer = kafka_io.make_producer(
            self.settings, delivery_timeout_ms=120_000, request_timeout_ms=5_000, max_block_ms=120_000,
            retry_backoff_ms=100, reconnect_backoff_max_ms=500,
        )
        next_id, pending = 0, []
        try:
            while pending or not self.stopping.is_set():
                if not pending:
                    pending, next_id = list(range(next_id, next_id + SEND_BATCH)), next_id + SEND_BATCH
                try:
                    kafka_io.send_all(producer, self.settings.topic_events,
                                      [(str(i).encode(), str(i).encode()) for i in pending], timeout_s=150)
                except kafka_io.KafkaDeliveryError:
                    self.resends += 1
                    continue
                with self._lock:
                    self.acknowledged.update(pending)
                pending = []
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            producer.close(timeout=10)


def read_values(settings: Settings, timeout_s: float = 60.0) -> list[bytes]:
    """Every value of the events topic, from the beginning up to its end now."""
    consumer = kafka_io.make_consumer(settings.bootstrap_servers)
    try:
        tps = [TopicPartition(settings.topic_events, p) for p in consumer.partitions_for_topic(settings.topic_events)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning()
        values, deadline = [], time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "the topic was not read to its end in time"
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
        return values
    finally:
        consumer.close()


def test_kill_9_of_the_component_three_times_loses_and_duplicates_no_acknowledged_record(component, record_property):
    component.start()
    producer = SteadyProducer(component.settings)
    producer.start()
    try:
        for kill in range(KILLS):
            target = producer.acked() + ACKS_BETWEEN_KILLS
            wait_for(lambda target=target: producer.error is None and producer.acked() >= target, 120,
                     f"{ACKS_BETWEEN_KILLS} more acknowledged records before kill {kill + 1}")
            component.kill_9()
            component.start()
        target = producer.acked() + ACKS_BETWEEN_KILLS
        wait_for(lambda: producer.acked() >= target, 120, "acknowledged records after the last restart")
    finally:
        producer.stopping.set()
        producer.join(timeout=180)
    assert not producer.is_alive() and producer.error is None, producer.error
    ids = [int(value) for value in read_values(component.settings)]
    component.stop()

    counts = Counter(ids)
    duplicated = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(producer.acknowledged - counts.keys())
    record_property("acknowledged", len(producer.acknowledged))
    record_property("resends", producer.resends)
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:10]}"
    assert not duplicated, f"{len(duplicated)} ids twice (hand resends: {producer.resends}), e.g. {duplicated[:10]}"
    assert len(ids) == len(producer.acknowledged) >= (KILLS + 1) * ACKS_BETWEEN_KILLS


def test_kill_9_of_lambdarec_broker_takes_the_jvm_and_frees_the_ports(component):
    component.start()
    producer = kafka_io.make_producer(component.settings)
    try:
        kafka_io.send_all(producer, component.settings.topic_events, [(None, b"before")])
    finally:
        producer.close()
    jvm = component.jvm_pid
    component.kill_9()  # asserts the JVM died with it
    for port in component.ports.values():
        wait_for(lambda port=port: port_free(port), 5, f"port {port} to be free after the broker died")
    component.start()  # same root, same ports
    assert component.jvm_pid != jvm
    assert read_values(component.settings) == [b"before"]
    component.stop()
