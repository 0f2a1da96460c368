"""The embedded broker and the Kafka helpers, against a real Tansu over a socket."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from kafka import TopicPartition

from lambdarec import kafka_io
from lambdarec.broker import BrokerError, EmbeddedBroker, PortInUseError
from tests.plugins.broker import free_port

pytestmark = pytest.mark.integration


def read_partition(bootstrap: str, topic: str, partition: int, count: int, timeout_s: float = 10.0):
    """The first ``count`` records of a partition, read by assign-and-seek."""
    consumer = kafka_io.make_consumer(bootstrap)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    records, deadline = [], time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout_ms=100).get(tp, []))
    finally:
        consumer.close()
    return records


def produce_batches(settings, topic: str, partition: int, batches: int, size: int) -> None:
    """``batches`` separate record batches (one flush each) of ``size`` records."""
    producer = kafka_io.make_producer(settings)
    try:
        for b in range(batches):
            records = [(None, f"{b}-{i}".encode()) for i in range(size)]
            kafka_io.send_all(producer, topic, records, partition=partition)
    finally:
        producer.close()


def test_broker_creates_platform_topics_with_configured_partitions(broker_settings):
    consumer = kafka_io.make_consumer(broker_settings.bootstrap_servers)
    try:
        partitions = {topic: consumer.partitions_for_topic(topic) for topic in ("events", "speed-updates")}
    finally:
        consumer.close()
    assert partitions == {"events": {0, 1}, "speed-updates": {0, 1}}


def test_ensure_topics_is_idempotent(broker_settings):
    assert kafka_io.ensure_topics(broker_settings, ["events", "extra"], 3) == ["extra"]
    assert kafka_io.ensure_topics(broker_settings, ["events", "extra"], 3) == []
    consumer = kafka_io.make_consumer(broker_settings.bootstrap_servers)
    try:
        assert consumer.partitions_for_topic("extra") == {0, 1, 2}
    finally:
        consumer.close()


def test_idempotent_producer_delivers_each_record_once_in_order(broker_settings):
    producer = kafka_io.make_producer(broker_settings)
    try:
        assert producer.config["enable_idempotence"] and producer.config["acks"] == -1
        sent = kafka_io.send_all(producer, "events", [(b"u1", f"v{i}".encode()) for i in range(25)], partition=1)
    finally:
        producer.close()
    assert [m.offset for m in sent] == list(range(25))
    records = read_partition(broker_settings.bootstrap_servers, "events", 1, 25)
    assert [(r.offset, r.key, r.value) for r in records] == [(i, b"u1", f"v{i}".encode()) for i in range(25)]


def test_send_all_reports_an_undeliverable_record(broker_settings):
    producer = kafka_io.make_producer(broker_settings, max_block_ms=1_000)
    try:
        with pytest.raises(kafka_io.KafkaDeliveryError, match="record 0 to topic 'events'.*partition 7"):
            kafka_io.send_all(producer, "events", [(None, b"x")], partition=7, timeout_s=2)
    finally:
        producer.close()


def test_end_offsets_alone_miss_tansus_newest_batch_but_partition_end_offsets_do_not(broker_settings):
    produce_batches(broker_settings, "events", 0, batches=3, size=10)
    consumer = kafka_io.make_consumer(broker_settings.bootstrap_servers)
    tps = [TopicPartition("events", 0), TopicPartition("events", 1)]
    try:
        listed = consumer.end_offsets(tps)
        true_end = kafka_io.partition_end_offsets(consumer, tps)
    finally:
        consumer.close()
    # Tansu 0.6.0: ListOffsets(latest) is the last batch's base offset + 1 (20 + 1), not 30.
    assert listed[tps[0]] == 21
    assert true_end == {tps[0]: 30, tps[1]: 0}


def test_partition_end_offsets_follow_new_data_on_a_reused_consumer(broker_settings):
    tp = TopicPartition("events", 0)
    consumer = kafka_io.make_consumer(broker_settings.bootstrap_servers)
    try:
        produce_batches(broker_settings, "events", 0, batches=1, size=4)
        first = kafka_io.partition_end_offsets(consumer, [tp])[tp]
        produce_batches(broker_settings, "events", 0, batches=2, size=3)
        second = kafka_io.partition_end_offsets(consumer, [tp])[tp]
    finally:
        consumer.close()
    assert (first, second) == (4, 10)


def test_wait_for_broker_gives_up_with_the_address_when_nothing_listens():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(kafka_io.BrokerUnavailableError, match=address):
        kafka_io.wait_for_broker(address, timeout_s=0.5)


def test_broker_refuses_when_a_cluster_is_configured(settings):
    with pytest.raises(BrokerError, match="kafka_bootstrap_servers is set"):
        EmbeddedBroker(settings.model_copy(update={"kafka_bootstrap_servers": "kafka:9092"}))


def test_broker_refuses_a_port_that_is_taken(embedded_broker):
    with pytest.raises(PortInUseError, match=str(embedded_broker.port)):
        EmbeddedBroker(embedded_broker.settings).start()
    assert embedded_broker.running()


def test_stop_ends_the_process_and_frees_the_port(settings):
    broker = EmbeddedBroker(settings.model_copy(update={"embedded_broker_port": free_port()})).start()
    pid = broker.pid
    broker.stop()
    assert not broker.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped
    with EmbeddedBroker(broker.settings) as again:  # the port is usable at once
        kafka_io.wait_for_broker(again.bootstrap_servers, timeout_s=5)


def test_cli_runs_the_broker_until_sigint_and_exits_zero(tmp_path):
    port = free_port()
    env = {**os.environ, "LAMBDAREC_ROOT": str(tmp_path), "LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "lambdarec.cli", "broker", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path, text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "the broker printed nothing within 60 s"
        line = json.loads(process.stdout.readline())
        assert line["event"] == "broker_ready" and line["bootstrap_servers"] == f"127.0.0.1:{port}"
        consumer = kafka_io.make_consumer(line["bootstrap_servers"])
        try:
            assert {"events", "speed-updates"} <= consumer.topics()
        finally:
            consumer.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert json.loads(process.stdout.readline())["event"] == "broker_stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(kafka_io.BrokerUnavailableError):
        kafka_io.wait_for_broker(f"127.0.0.1:{port}", timeout_s=0.3)
