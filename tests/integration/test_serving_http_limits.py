"""HTTP and rate limits on ``lambdarec serve`` as a user starts it, in one process and with ``--workers 2``.

Real sockets against the real command line and a real broker: oversized heads get
431/414, connections that dribble their head or stall their body are cut, /health
keeps answering while 200 slow clients hold connections, a flood of requests in flight
gets 503 while the probes pass, and one caller gets its rate over both workers
together, not twice it. The limits are set small (settings below) so that the cases
run in seconds; the defaults are the settings' own.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from lambdarec.processes import Child, start_child
from deploy.cli import lambdarec_command
from lambdarec.settings import Settings
from lambdarec.submit import spark_submit_env
from tests.plugins.broker import free_port, start_embedded_broker
from tests.support.serving import logged_pids, wait_until

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 50  # per worker
MAX_IN_FLIGHT = 4  # per worker
RATE_PER_S, BURST = 5.0, 10
LIMITS = {"serve_header_timeout_s": HEADER_TIMEOUT_S, "serve_body_timeout_s": BODY_TIMEOUT_S,
          "serve_keep_alive_s": 1, "serve_max_connections": MAX_CONNECTIONS, "serve_max_in_flight": MAX_IN_FLIGHT,
          "ingest_rate_limit_per_s": RATE_PER_S, "ingest_rate_burst": BURST}
SLACK_S = 2.0  # a deadline's allowance for a busy 2-core machine
PROBE_DEADLINE_S = 2.0
SLOW_CLIENTS = 200


@dataclass
class Served:
    child: Child
    port: int
    workers: int

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def broker_settings_for_module(tmp_path_factory) -> Iterator[Settings]:
    broker = start_embedded_broker(Settings(root=tmp_path_factory.mktemp("lambdarec")))
    yield broker.settings
    broker.stop()


def start_serving(settings: Settings, workers: int, log_dir) -> Iterator[Served]:
    settings = settings.model_copy(update={"serve_port": free_port(), **LIMITS})
    child = start_child(f"serving-{workers}", lambdarec_command("serve", "--workers", str(workers)), log_dir,
                        spark_submit_env(settings))
    served = Served(child, settings.serve_port, workers)
    try:
        wait_until(lambda: child.check_alive() and answers(f"{served.api}/health") == 200, "serving /health", 90)
        yield served
    finally:
        child.stop()


@pytest.fixture(scope="module")
def one_process(broker_settings_for_module, tmp_path_factory) -> Iterator[Served]:
    yield from start_serving(broker_settings_for_module, 1, tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="module")
def two_workers(broker_settings_for_module, tmp_path_factory) -> Iterator[Served]:
    yield from start_serving(broker_settings_for_module, 2, tmp_path_factory.mktemp("logs"))


@pytest.fixture(params=["one_process", "two_workers"])
def served(request) -> Served:
    return request.getfixturevalue(request.param)


def answers(url: str, timeout_s: float = PROBE_DEADLINE_S, **kwargs) -> int | str:
    """The status a new connection gets for GET ``url``, or the error it met."""
    try:
        return httpx.get(url, timeout=timeout_s, **kwargs).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


def exchange(port: int, data: bytes, timeout_s: float) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it (fails after ``timeout_s``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        return read_to_end(sock)


def read_to_end(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_oversized_heads_are_refused_before_the_app(served):
    big = answers(f"{served.api}/health", headers={"X-Big": "a" * 20_000})  # default serve_max_header_bytes 16384
    many = answers(f"{served.api}/health", headers={f"X-Field-{n}": "a" for n in range(120)})  # default 100 fields
    long = httpx.get(f"{served.api}/health?{'a' * 9000}", timeout=10)  # default serve_max_url_bytes 8192
    assert (big, many, long.status_code) == (431, 431, 414)
    assert "serve_max_url_bytes" in long.json()["detail"]
    # within the limits, the same requests pass
    assert answers(f"{served.api}/health", headers={"X-Big": "a" * 15_000}) == 200
    assert answers(f"{served.api}/health?{'a' * 8000}") == 200


def test_a_connection_that_sends_no_head_or_stalls_its_body_is_cut(served):
    started = time.monotonic()
    assert exchange(served.port, b"", HEADER_TIMEOUT_S + SLACK_S) == b""  # idle: closed
    assert time.monotonic() - started >= HEADER_TIMEOUT_S
    half_head = exchange(served.port, b"GET /health HTTP/1.1\r\nHost: t\r\n", HEADER_TIMEOUT_S + SLACK_S)
    assert half_head.startswith(b"HTTP/1.1 408 ")
    stalled = exchange(served.port, b"POST /v1/events/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 1000\r\n\r\n[{", BODY_TIMEOUT_S + SLACK_S)
    assert stalled.startswith(b"HTTP/1.1 408 ") and b"body" in stalled


class SlowClients:
    """``count`` connections that send a request head one byte a second and never finish it."""

    def __init__(self, port: int, count: int):
        self.selector = selectors.DefaultSelector()
        self.endings: list[bytes] = []  # what each connection got before the server closed it
        self.last_byte = self.opened = time.monotonic()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
        self.all_opened = time.monotonic()

    @property
    def open(self) -> int:
        return len(self.selector.get_map())

    def step(self, wait_s: float) -> None:
        """Take what the server sends (an answer or the end) for ``wait_s``; a byte on each open connection a second."""
        for key, _ in self.selector.select(wait_s):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                self.endings.append(sock.recv(65536)[:12])
            except ConnectionError:
                self.endings.append(b"")
            self.selector.unregister(sock)
            sock.close()
        if time.monotonic() - self.last_byte >= 1.0:
            for key in list(self.selector.get_map().values()):
                with contextlib.suppress(OSError):  # the server closed it: its end shows up as readable
                    key.fileobj.send(b"a")  # type: ignore[union-attr]
            self.last_byte = time.monotonic()

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()


def test_health_keeps_answering_while_slow_clients_dribble_their_heads(served):
    slow = SlowClients(served.port, SLOW_CLIENTS)
    probes: list[int | str] = []
    try:
        deadline = slow.all_opened + HEADER_TIMEOUT_S + SLACK_S
        while time.monotonic() < deadline and (slow.open or len(probes) < 5):
            probes.append(answers(f"{served.api}/health"))
            slow.step(0.2)
        # every probe answered in time, and the server cut every slow client within the head's deadline
        assert probes and set(probes) == {200}, probes
        assert slow.open == 0, f"{slow.open} slow clients still open"
        # past the connection cap the oldest slow clients made room (closed unanswered), the rest timed out (408)
        assert b"" in slow.endings and b"HTTP/1.1 408" in slow.endings, set(slow.endings)
    finally:
        slow.close()


def test_requests_past_the_in_flight_limit_get_503_while_the_probes_pass(one_process):
    head = (b"POST /v1/events/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n[")
    held = [socket.create_connection(("127.0.0.1", one_process.port), timeout=BODY_TIMEOUT_S + SLACK_S)
            for _ in range(MAX_IN_FLIGHT)]
    try:
        for sock in held:
            sock.sendall(head)  # in the app, waiting for the rest of their bodies
        wait_until(lambda: answers(f"{one_process.api}/v1/no-such-route") == 503, "the in-flight limit", 10)
        refused = httpx.get(f"{one_process.api}/v1/no-such-route", timeout=10)
        assert refused.headers["retry-after"] == "1" and "serve_max_in_flight" in refused.json()["detail"]
        assert answers(f"{one_process.api}/health") == 200
        ready = httpx.get(f"{one_process.api}/ready", timeout=10)
        assert "ready" in ready.json()  # readiness's own answer, not the limit's
        # the held bodies are cut at their deadline, which frees the worker
        assert all(read_to_end(sock).startswith(b"HTTP/1.1 408 ") for sock in held)
        assert answers(f"{one_process.api}/v1/no-such-route") == 404
    finally:
        for sock in held:
            sock.close()


def no_consent_event() -> dict:
    """Dropped for lack of consent, so it reaches no topic, but it counts against the rate limit."""
    return {"event_id": str(uuid.uuid4()), "user_id": "u", "item_id": "i", "event_type": "click",
            "occurred_at": datetime.now(UTC).isoformat(), "context": {"consent": False}}


def test_a_caller_gets_its_rate_over_both_workers_together_not_twice_it(two_workers):
    def post(_: int) -> int:  # a new connection each, so that the kernel spreads them over the workers
        return httpx.post(f"{two_workers.api}/v1/events", json=no_consent_event(), timeout=10).status_code

    statuses: list[int] = []
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        while time.monotonic() - started < 3.0:
            statuses.extend(pool.map(post, range(8)))
    elapsed = time.monotonic() - started
    assert set(statuses) == {202, 429}
    assert len(logged_pids(two_workers.child.log_path.read_text(), "/v1/events")) == 2  # both workers took some
    # one bucket: the burst and the rate over the time taken; a bucket per worker would grant up to twice that
    assert BURST <= statuses.count(202) <= BURST + RATE_PER_S * elapsed + 1, statuses.count(202)
