"""The serving API end to end: a real uvicorn server over a socket, a real embedded
broker (Apache Kafka), and a model in a real Delta lake on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from lambdarec import api_keys
from lambdarec.kafka_io import make_producer, send_all
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from tests.plugins.broker import free_port
from tests.support.serving import DEADLINE_S, read_topic, serving, speed_update, wait_until, write_model

pytestmark = pytest.mark.integration

ITEMS = {
    **{f"a{n}": [1.0, 0.05 * n] for n in range(5)},
    **{f"b{n}": [0.05 * n, 1.0] for n in range(5)},
}


def event(user_id: str, item_id: str, **overrides) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user_id,
        "item_id": item_id,
        "event_type": "click",
        "occurred_at": datetime.now(UTC).isoformat(),
        **overrides,
    }


def test_posted_events_land_on_the_topic_pseudonymised(broker_settings):
    consented = [event("alice", "i1"), event("alice", "i2", context={"consent": True, "device": "ios"})]
    refused = event("bob", "i3", context={"consent": False})
    single = event("carol", "i4")
    with serving(broker_settings) as client:
        response = client.post("/events/batch", json=[*consented, refused])
        assert response.status_code == 202
        assert response.json() == {
            "accepted": [e["event_id"] for e in consented],
            "dropped_no_consent": [refused["event_id"]],
        }
        assert client.post("/events", json=single).status_code == 202

    records = read_topic(broker_settings, broker_settings.topic_events, expected=3)
    key = broker_settings.pseudonym_key
    messages = {json.loads(r.value)["event_id"]: (r.key, json.loads(r.value)) for r in records}
    assert set(messages) == {e["event_id"] for e in [*consented, single]}
    for sent in [*consented, single]:
        record_key, message = messages[sent["event_id"]]
        assert message["user_id"] == pseudonymise(sent["user_id"], key)
        assert record_key == message["user_id"].encode()
        assert message["item_id"] == sent["item_id"] and message["schema_version"] == 1
    assert not any(b"alice" in r.value or b"carol" in r.value for r in records)


def test_recommendations_merge_the_model_and_the_speed_view(broker_settings):
    settings = broker_settings.model_copy(update={"serve_model_poll_s": 0.2})
    key = settings.pseudonym_key
    alice = pseudonymise("alice", key)
    write_model(Lake(settings), 1, 10, ITEMS, {
        alice: {"a0": 3.0, "a1": 2.0},
        pseudonymise("bob", key): {"b0": 4.0, "b1": 1.0, "a0": 1.0},
    })
    with serving(settings) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, "model loaded and speed view following")

        before = client.get("/users/alice/recommendations", params={"k": 3}).json()
        assert before["user_id"] == "alice"
        assert (before["strategy"], before["model_version"]) == ("model", 1)
        assert {i["item_id"] for i in before["items"]} == {"a2", "a3", "a4"}

        stranger = client.get("/users/stranger/recommendations", params={"k": 2}).json()
        assert stranger["strategy"] == "popular"
        # popularity counts users (lambdarec.popularity): a0 has two, a1 and b0 one each, a1 first by position
        assert [i["item_id"] for i in stranger["items"]] == ["a0", "a1"]

        producer = make_producer(settings)
        send_all(producer, settings.topic_speed_updates, [(None, b"not json")])  # skipped, not fatal
        producer.close()
        speed_update(settings, alice, batch_id=7, events_version=11, items=["b0", "b1", "b2"])

        def folded_in():
            body = client.get("/users/alice/recommendations", params={"k": 3}).json()
            return body if body["strategy"] == "fold_in" else None

        after = wait_until(folded_in, "alice's fresh purchases to reach her recommendations")
        assert after["fresh_interactions"] == 3
        assert [i["item_id"] for i in after["items"]][:2] == ["b4", "b3"]
        assert not {"a0", "a1", "b0", "b1", "b2"} & {i["item_id"] for i in after["items"]}
        assert (after["speed_view"]["events_version"], after["speed_view"]["batch_id"]) == (11, 7)
        wait_until(
            lambda: sum(client.get("/ready").json()["speed_view"]["offsets"].values()) == 2,
            "the view to move past the bad record too",
        )

        metrics = client.get("/metrics").text
        assert "lambdarec_model_version 1.0" in metrics
        assert 'lambdarec_recommendations_total{strategy="fold_in"}' in metrics


def test_admin_reload_swaps_in_a_newly_published_model(broker_settings):
    settings = broker_settings.model_copy(update={"serve_model_poll_s": 3600, "auth": "keys"})  # only /admin/reload
    lake = Lake(settings)
    auth = {"Authorization": f"Bearer {api_keys.create(lake, 'operator', ['admin'])[1]}"}
    read = {"Authorization": f"Bearer {api_keys.create(lake, 'backend', ['read'])[1]}"}
    write_model(lake, 1, 10, ITEMS, {pseudonymise("alice", settings.pseudonym_key): {"a0": 1.0}})
    with serving(settings) as client:
        wait_until(lambda: client.get("/ready").json()["model_version"] == 1, "model 1")
        write_model(lake, 2, 20, ITEMS, {pseudonymise("alice", settings.pseudonym_key): {"b0": 1.0}})
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/admin/reload", headers=read).status_code == 403
        assert client.post("/admin/reload", headers=auth).json() == {"reloaded": True, "model_version": 2}
        body = client.get("/users/alice/recommendations", headers=read).json()
        assert body["model_version"] == 2
        assert "b0" not in {i["item_id"] for i in body["items"]}
        assert client.post("/v1/admin/reload", headers=auth).json() == {"reloaded": False, "model_version": 2}


def test_unreachable_broker_gives_a_clear_503(settings):
    nothing_listens = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    with serving(nothing_listens) as client:
        response = client.post("/events", json=event("alice", "i1"))
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "broker_unavailable" and body["retryable"] is True
    assert "retry" in body["detail"] and "Traceback" not in response.text


def test_lambdarec_serve_runs_the_api(broker_settings):
    port = free_port()
    env = {
        **os.environ,
        "LAMBDAREC_ROOT": str(broker_settings.root),
        "LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS": broker_settings.bootstrap_servers,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "serve", "--port", str(port)],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        def healthy():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json() == {"status": "ok"}
            except httpx.TransportError:
                assert process.poll() is None, "lambdarec serve exited early"
                return False

        wait_until(healthy, "lambdarec serve to answer /health", timeout_s=60)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 0
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line["event"] == "request" and line["route"] == "/health" for line in lines)
