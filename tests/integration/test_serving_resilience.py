"""Serving under change: model swaps under load, restarts under event flow, freshness.

Real uvicorn over a socket, a real embedded broker, real Delta tables on disk. A
thread stands in for the speed job (it writes the speed table, then pushes the
same batch to ``speed-updates``, in that order, as the job does), so these tests
do not need Spark.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime

import httpx
import numpy as np
import pyarrow as pa
import pytest

from lambdarec.kafka_io import make_producer, send_all
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import SPEED_USER_INTERACTIONS
from serving.app import create_app
from tests.support.serving import serving, speed_update, wait_until, write_model

pytestmark = pytest.mark.integration

FRESHNESS_TARGET_S = 2.0  # a pushed speed update shows in the user's recommendations within this


def random_model(n_items: int, n_users: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    items = {f"i{n}": rng.normal(size=8).tolist() for n in range(n_items)}
    names = list(items)
    ratings = {f"u{n}": {names[j]: 2.0 for j in rng.choice(n_items, 5, replace=False)} for n in range(n_users)}
    return items, ratings


def test_a_model_swap_under_steady_load_fails_no_request(broker_settings, record_property):
    settings = broker_settings.model_copy(update={"serve_model_poll_s": 3600})  # open mode: tests/conftest.py
    lake = Lake(settings)
    items, ratings = random_model(3000, 2000, seed=1)
    ratings[pseudonymise("alice", settings.pseudonym_key)] = {"i1": 4.0}
    write_model(lake, 1, 10, items, ratings)
    results: list[tuple[float, float, int, int | None]] = []  # (started, seconds, status, model version)
    stop = threading.Event()

    def load(base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            n = 0
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    response = client.get(f"/v1/users/user-{n % 50}/recommendations", params={"k": 10})
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    status = response.status_code
                except httpx.HTTPError:
                    version, status = None, 0
                results.append((started, time.perf_counter() - started, status, version))
                n += 1
                time.sleep(0.005)  # a steady offered rate, not synchronisation

    with serving(settings) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, "model 1 and the speed view")
        loader = threading.Thread(target=load, args=(str(client.base_url),), daemon=True)
        loader.start()
        wait_until(lambda: len(results) >= 200, "load before the swap")
        write_model(lake, 2, 20, *random_model(3000, 2000, seed=2))
        swap_started = time.perf_counter()
        reload = client.post("/admin/reload")
        swap_ended = time.perf_counter()
        wait_until(lambda: sum(1 for r in results if r[0] > swap_ended) >= 200, "load after the swap")
        stop.set()
        loader.join(10)

    assert reload.json() == {"reloaded": True, "model_version": 2}
    assert [r for r in results if r[2] != 200] == []
    versions = [r[3] for r in sorted(results)]
    assert versions[0] == 1 and versions[-1] == 2
    assert versions == sorted(versions)  # never back to the old model once the new one answered
    before = [r[1] for r in results if r[0] + r[1] < swap_started]
    during = [r[1] for r in results if swap_started <= r[0] <= swap_ended]
    record_property("requests", len(results))
    record_property("p99_before_ms", round(1000 * float(np.percentile(before, 99)), 2))
    if during:
        record_property("p99_during_swap_ms", round(1000 * float(np.percentile(during, 99)), 2))


class FakeSpeedJob:
    """Writes each batch to speed_user_interactions, then pushes it to speed-updates."""

    def __init__(self, settings, users: int = 8, rows_per_batch: int = 4):
        self.settings = settings
        self.lake = Lake(settings)
        self.users = [f"p{n}" for n in range(users)]
        self.rows_per_batch = rows_per_batch
        self.sent: list[tuple[str, str]] = []  # (user, event id)
        self.batches = 0
        self.stop = threading.Event()
        self.producer = make_producer(settings)

    def run(self, batches: int) -> None:
        for batch_id in range(batches):
            if self.stop.is_set():
                break
            rows = [
                {"user_id": self.users[(batch_id * self.rows_per_batch + n) % len(self.users)],
                 "item_id": f"item-{batch_id}-{n}", "event_type": "click", "weight": 2.0,
                 "occurred_at": datetime.now(UTC), "event_id": str(uuid.uuid4()), "events_version": batch_id,
                 "query_id": "fake-query", "batch_id": batch_id}
                for n in range(self.rows_per_batch)
            ]
            self.lake.append_arrow(
                SPEED_USER_INTERACTIONS, pa.Table.from_pylist(rows, schema=SPEED_USER_INTERACTIONS.schema),
                app_id="fake-speed", txn_version=batch_id,
            )
            message = {"kind": "user_interactions", "query_id": "fake-query", "batch_id": batch_id,
                       "events_version": batch_id,
                       "rows": [{**row, "occurred_at": row["occurred_at"].isoformat()} for row in rows]}
            send_all(self.producer, self.settings.topic_speed_updates, [(None, json.dumps(message).encode())])
            self.sent.extend((row["user_id"], row["event_id"]) for row in rows)
            self.batches = batch_id + 1


def test_a_restart_under_steady_event_flow_loses_no_speed_view_state(broker_settings):
    settings = broker_settings.model_copy(update={"speed_recent_items": 1000})
    write_model(Lake(settings), 1, 0, *random_model(20, 5, seed=3))
    job = FakeSpeedJob(settings)
    flow = threading.Thread(target=job.run, args=(60,), daemon=True)

    def state(app) -> set[tuple[str, str]]:
        view = app.state.services.speed_view
        return {(user, i.event_id) for user in job.users for i in view.interactions(user)}

    first = create_app(settings)
    with serving(settings, first) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, "the first server to be ready")
        flow.start()
        wait_until(lambda: job.batches >= 15, "events flowing")
    seen_by_first = state(first)
    second = create_app(settings)
    with serving(settings, second) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, "the restarted server to be ready")
        assert client.get("/ready").json()["speed_view"]["bootstrapped"] is True
        flow.join(120)
        wait_until(lambda: state(second) == set(job.sent), "the restarted view to hold every event")
        counts = [len(second.state.services.speed_view.interactions(user)) for user in job.users]
    assert job.batches == 60 and seen_by_first and seen_by_first < set(job.sent)
    assert sum(counts) == len(job.sent)  # nothing twice either


def test_recommendations_reflect_an_interaction_within_the_freshness_target(broker_settings):
    settings = broker_settings.model_copy(update={"serve_model_poll_s": 0.2})
    items = {**{f"a{n}": [1.0, 0.05 * n] for n in range(5)}, **{f"b{n}": [0.05 * n, 1.0] for n in range(5)}}
    alice = pseudonymise("alice", settings.pseudonym_key)
    write_model(Lake(settings), 1, 10, items, {alice: {"a0": 3.0, "a1": 2.0}})
    with serving(settings) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, "ready")
        before = client.get("/v1/users/alice/recommendations", params={"k": 4}).json()
        assert before["strategy"] == "model"
        responses = []

        def reflected():
            body = client.get("/v1/users/alice/recommendations", params={"k": 9}).json()
            responses.append(body)
            return body["fresh_interactions"] == 2

        speed_update(settings, alice, batch_id=1, events_version=11, items=["b0", "b2"])
        wait_until(reflected, "alice's purchases in her recommendations", timeout_s=FRESHNESS_TARGET_S)
        after = responses[-1]
        assert after["strategy"] == "fold_in" and after["items"] != before["items"]
        assert after["items"][0]["item_id"].startswith("b")  # her taste moved
        for body in responses:
            returned = {i["item_id"] for i in body["items"]}
            assert not returned & {"a0", "a1"}
            if body["fresh_interactions"]:
                assert not returned & {"b0", "b2"}
        shown = client.get("/v1/users/alice/recommendations", params={"k": 9, "exclude_seen": False}).json()
        assert {"b0", "b2"} & {i["item_id"] for i in shown["items"]}
