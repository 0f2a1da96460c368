"""Broker fixtures: a real embedded Tansu broker per test, on a free loopback port.

Tansu starts in milliseconds and keeps everything in memory, so each test gets a
fresh broker with fresh topics rather than sharing state with other tests (or
with other agents' test runs on the same machine).
"""

from __future__ import annotations

import socket

import pytest

from lambdarec.broker import EmbeddedBroker, PortInUseError
from lambdarec.settings import Settings

PORT_ATTEMPTS = 5


def free_port() -> int:
    """A loopback port that was free a moment ago (the broker re-checks when it binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_embedded_broker(settings: Settings) -> EmbeddedBroker:
    """Start a broker for ``settings`` on a free port, retrying if another process wins the port."""
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            return _start_on_free_port(settings)
        except PortInUseError:
            continue
    return _start_on_free_port(settings)


def _start_on_free_port(settings: Settings) -> EmbeddedBroker:
    port_settings = settings.model_copy(update={"kafka_bootstrap_servers": "", "embedded_broker_port": free_port()})
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
