"""The idle gate that lets a model swap's steps run between requests, and the store's use of it.

Real threads and a real ASGI app (Starlette's test client); the lake is real Delta on disk.
"""

import threading
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lambdarec.lake import Lake
from serving.idle_gate import CountRequests, IdleGate
from serving.views.model_store import ModelStore
from tests.support.serving import write_model

pytestmark = pytest.mark.unit

ITEMS = {"a": [1.0, 0.0], "b": [0.0, 1.0]}
RATINGS = {"u1": {"a": 2.0}}


@pytest.fixture
def lake(settings):
    return Lake(settings)


def in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_pause_passes_at_once_when_no_request_is_in_flight():
    gate = IdleGate(max_wait_s=5)
    started = time.perf_counter()
    assert gate.pause() is True
    assert time.perf_counter() - started < 1


def test_pause_waits_for_the_request_in_flight_to_finish():
    gate = IdleGate(max_wait_s=30)
    gate.enter()
    passed = threading.Event()
    waiter = in_thread(lambda: gate.pause() and passed.set())
    assert not passed.wait(0.3), "pause() returned while a request was in flight"
    gate.leave()
    waiter.join(5)
    assert passed.is_set()


def test_pause_gives_way_when_requests_never_stop():
    gate = IdleGate(max_wait_s=0.1)
    gate.enter()
    started = time.perf_counter()
    assert gate.pause() is False
    assert 0.1 <= time.perf_counter() - started < 2


def test_a_request_waiting_outside_the_gate_does_not_hold_up_the_work_it_waits_for():
    gate = IdleGate(max_wait_s=30)
    gate.enter()  # the /admin/reload request itself
    with gate.outside():
        assert gate.in_flight == 0
        assert gate.pause() is True
    assert gate.in_flight == 1


def test_every_request_is_in_flight_until_its_response_is_sent():
    gate = IdleGate()
    app = FastAPI()
    seen = []

    @app.get("/probe")
    def probe() -> dict:
        seen.append(gate.in_flight)
        return {}

    app.add_middleware(CountRequests, gate=gate)
    with TestClient(app) as client:
        assert client.get("/probe").status_code == 200
        assert client.get("/missing").status_code == 404
    assert seen == [1]
    assert gate.in_flight == 0


def test_a_swap_waits_for_requests_in_flight_and_completes_once_they_finish(settings, lake):
    """The store's steps run only between requests: with one in flight the swap stays pending."""
    write_model(lake, 1, 5, ITEMS, RATINGS)
    gate = IdleGate(max_wait_s=30)
    at_gate = threading.Event()

    def pause() -> bool:
        at_gate.set()
        return gate.pause()

    store = ModelStore(settings, lake, pause=pause)
    gate.enter()
    loader = in_thread(store.reload)
    assert at_gate.wait(30), "the swap never reached the gate"
    loader.join(0.3)  # held at the gate for max_wait_s (30 s) unless the gate is broken
    assert loader.is_alive() and store.current is None, "the swap went ahead while a request was in flight"
    gate.leave()
    loader.join(30)
    assert store.current is not None and store.current.version == 1


def test_a_polled_registry_without_new_commits_is_not_read_again(settings, lake):
    write_model(lake, 1, 5, ITEMS, RATINGS)
    steps = []
    store = ModelStore(settings, lake, pause=lambda: steps.append(1))
    assert store.reload()
    steps.clear()
    assert not store.reload()
    assert len(steps) == 1  # the one pause before looking at the registry: no file read, no load
    write_model(lake, 2, 6, ITEMS, RATINGS)
    assert store.reload() and store.current.version == 2
