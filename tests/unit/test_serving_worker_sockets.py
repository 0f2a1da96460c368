"""Serving workers' listening sockets: one per worker on a shared port, connections spread by the kernel.

Real sockets on loopback; no server. The workers themselves are started by
``tests/integration/test_serving_workers.py``.
"""

from __future__ import annotations

import socket

import pytest

from serving.workers import claim_port, listening_socket
from tests.plugins.broker import free_port

pytestmark = pytest.mark.unit

CONNECTIONS = 32


def accepted(sock: socket.socket) -> int:
    """How many connections wait in ``sock``'s accept queue (accepting and closing them)."""
    sock.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_workers_sockets_share_a_port_and_the_kernel_spreads_connections_over_them():
    port = free_port()
    workers = [listening_socket("127.0.0.1", port, 64) for _ in range(2)]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
    try:
        counts = [accepted(sock) for sock in workers]
        assert sum(counts) == CONNECTIONS
        # hashed over the two sockets: all 32 on one would happen once in 2**31 runs
        assert min(counts) > 0, counts
    finally:
        for sock in [*clients, *workers]:
            sock.close()


def test_a_second_serve_on_a_taken_port_fails_rather_than_joining_it():
    port = free_port()
    worker = listening_socket("127.0.0.1", port, 64)
    try:
        with pytest.raises(OSError):
            claim_port("127.0.0.1", port)
    finally:
        worker.close()
    claim_port("127.0.0.1", port)  # free again once the workers are gone
