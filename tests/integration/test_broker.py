"""The embedded broker (a single-node Kafka) and the Kafka helpers, over a socket."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from lambdarec import kafka_io
from deploy.embedded.broker import BrokerError, EmbeddedBroker, PortInUseError
from lambdarec.processes import wait_for
from tests.plugins.broker import broker_ports, free_port

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

    def partitions() -> set[int] | None:
        consumer = kafka_io.make_consumer(broker_settings.bootstrap_servers)  # fresh metadata each time
        try:
            return consumer.partitions_for_topic("extra") or None
        finally:
            consumer.close()

    # CreateTopics answers once the controller made the topic; its partitions' leaders follow a moment later
    assert wait_for(partitions, 30, "the new topic's partitions", interval_s=0.2) == {0, 1, 2}


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


def test_end_offsets_count_every_record_of_every_batch(broker_settings):
    produce_batches(broker_settings, "events", 0, batches=3, size=10)
    consumer = kafka_io.make_consumer(broker_settings.bootstrap_servers)
    tps = [TopicPartition("events", 0), TopicPartition("events", 1)]
    try:
        listed = consumer.end_offsets(tps)
        compat = kafka_io.partition_end_offsets(consumer, tps)
        assert set(consumer.assignment()) == set(tps)  # callers seek right after
    finally:
        consumer.close()
    assert listed == compat == {tps[0]: 30, tps[1]: 0}


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


def topic_config(settings, topic: str, key: str) -> dict:
    """One config entry of a topic as the broker describes it: value, config_source, ..."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        response = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {key: None})])
    finally:
        admin.close()
    return response["topic"][topic][key]


def test_topics_get_partitions_replication_and_retention_from_settings(broker_settings):
    settings = broker_settings.model_copy(update={"topic_retention_ms": 3_600_000, "topic_partitions": 3})
    assert kafka_io.ensure_topics(settings, ["retained"]) == ["retained"]
    assert topic_config(settings, "retained", "retention.ms")["value"] == "3600000"
    events_retention = topic_config(settings, "events", "retention.ms")
    assert (events_retention["value"], events_retention["config_source"]) == (
        str(broker_settings.topic_retention_ms), "DYNAMIC_TOPIC_CONFIG")  # set on the topic, not the broker's default
    consumer = kafka_io.make_consumer(settings.bootstrap_servers)
    try:
        assert consumer.partitions_for_topic("retained") == {0, 1, 2}
    finally:
        consumer.close()
    with pytest.raises(Exception, match="(?i)replication"):  # one node cannot hold two replicas
        kafka_io.ensure_topics(settings.model_copy(update={"topic_replication_factor": 2}), ["twice"])


def test_embedded_broker_refuses_a_replication_factor_above_one(settings):
    with pytest.raises(BrokerError, match="single node"):
        EmbeddedBroker(settings.model_copy(update={"topic_replication_factor": 3}))


def test_listeners_are_loopback_only_and_storage_is_formatted_once(embedded_broker):
    config = embedded_broker.config_path.read_text()
    assert "process.roles=broker,controller" in config
    assert f"listeners=PLAINTEXT://127.0.0.1:{embedded_broker.port},CONTROLLER://127.0.0.1:{embedded_broker.controller_port}" in config
    cluster_id = embedded_broker.cluster_id()
    meta = (embedded_broker.data_dir / "meta.properties").read_text()
    assert f"cluster.id={cluster_id}" in meta
    embedded_broker.stop()
    with EmbeddedBroker(embedded_broker.settings) as again:
        assert again.cluster_id() == cluster_id
        assert (again.data_dir / "meta.properties").read_text() == meta
    assert embedded_broker.log_path.read_text().count("Formatting metadata directory") == 1


def consume_all(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list:
    """Every record of ``topic`` from the beginning up to its end now."""
    consumer = kafka_io.make_consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning()
        records, deadline = [], time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic} not read to its end within {timeout_s}s"
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_restart_keeps_every_acknowledged_record(embedded_broker, how):
    settings = embedded_broker.settings
    produce_batches(settings, "events", 0, batches=4, size=25)
    produce_batches(settings, "events", 1, batches=1, size=10)
    pid = embedded_broker.pid
    if how == "sigkill":
        os.kill(pid, signal.SIGKILL)
        embedded_broker._process.wait(timeout=10)
        assert not embedded_broker.running()
    embedded_broker.stop()
    with EmbeddedBroker(settings) as again:
        assert again.pid != pid
        records = consume_all(again.bootstrap_servers, "events")
        produce_batches(settings, "events", 0, batches=1, size=5)  # and it takes new ones after them
        assert len(consume_all(again.bootstrap_servers, "events")) == 115
    values = sorted(r.value.decode() for r in records)
    assert values == sorted([f"{b}-{i}" for b in range(4) for i in range(25)] + [f"0-{i}" for i in range(10)])


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
    other_root = embedded_broker.settings.model_copy(update={
        "root": embedded_broker.settings.root / "other", "embedded_broker_port": free_port(),
    })
    with pytest.raises(PortInUseError, match=f"{embedded_broker.controller_port}.*CONTROLLER_PORT"):
        EmbeddedBroker(other_root).start()
    assert embedded_broker.running()


def test_broker_refuses_one_port_for_both_listeners(settings):
    with pytest.raises(BrokerError, match="two ports"):
        EmbeddedBroker(settings.model_copy(update={"embedded_broker_port": 20000, "embedded_controller_port": 20000}))


def test_stop_ends_the_process_and_frees_the_port(settings):
    broker = EmbeddedBroker(settings.model_copy(update=broker_ports())).start()
    pid = broker.pid
    broker.stop()
    assert not broker.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped
    with EmbeddedBroker(broker.settings) as again:  # the port is usable at once
        kafka_io.wait_for_broker(again.bootstrap_servers, timeout_s=5)


def test_cli_runs_the_broker_until_sigint_and_exits_zero(tmp_path):
    ports = broker_ports()
    port = ports["embedded_broker_port"]
    env = {**os.environ, "LAMBDAREC_ROOT": str(tmp_path), "LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "broker", "--port", str(port),
         "--controller-port", str(ports["embedded_controller_port"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path, text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "the broker printed nothing within 60 s"
        line = json.loads(process.stdout.readline())
        assert line["event"] == "broker_ready" and line["bootstrap_servers"] == f"127.0.0.1:{port}"
        assert line["controller_port"] == ports["embedded_controller_port"]
        jvm = line["pid"]
        consumer = kafka_io.make_consumer(line["bootstrap_servers"])
        try:
            assert {"events", "speed-updates"} <= consumer.topics()
        finally:
            consumer.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert json.loads(process.stdout.readline())["event"] == "broker_stopped"
        with pytest.raises(ProcessLookupError):
            os.kill(jvm, 0)  # the JVM was stopped and reaped, not left behind
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(kafka_io.BrokerUnavailableError):
        kafka_io.wait_for_broker(f"127.0.0.1:{port}", timeout_s=0.3)
