"""Broker fixtures: a real embedded Kafka per test, on free loopback ports.

Each test gets a fresh single-node Kafka (KRaft) rooted in its tmp folder, with
fresh topics, rather than sharing state with other tests (or with other agents'
test runs on the same machine). A start, storage format included, takes about
3 s on a 2-core machine.
"""

from __future__ import annotations

import socket

import pytest

from deploy.embedded.broker import EmbeddedBroker, PortInUseError
from lambdarec.settings import Settings

PORT_ATTEMPTS = 5


def free_port() -> int:
    """A loopback port that was free a moment ago (the broker re-checks when it binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    probes = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def broker_ports() -> dict[str, int]:
    """Settings updates that put the embedded broker's two listeners on free ports."""
    port, controller_port = free_ports(2)
    return {"embedded_broker_port": port, "embedded_controller_port": controller_port}


def start_embedded_broker(settings: Settings) -> EmbeddedBroker:
    """Start a broker for ``settings`` on free ports, retrying if another process wins a port."""
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            return _start_on_free_ports(settings)
        except PortInUseError:
            continue
    return _start_on_free_ports(settings)


def _start_on_free_ports(settings: Settings) -> EmbeddedBroker:
    port_settings = settings.model_copy(update={"kafka_bootstrap_servers": "", **broker_ports()})
    return EmbeddedBroker(port_settings).start()


@pytest.fixture
def embedded_broker(settings: Settings):
    """The running EmbeddedBroker (platform topics created); ``.settings`` point at it."""
    broker = start_embedded_broker(settings)
    yield broker
    broker.stop()


@pytest.fixture
def broker_settings(embedded_broker: EmbeddedBroker) -> Settings:
    """Settings rooted in this test's tmp folder whose bootstrap servers reach a fresh broker."""
    return embedded_broker.settings
