"""Erasure under load: the whole platform running, one user erased mid-stream.

A real broker, the speed job's events and features queries streaming on Spark,
serving on a real HTTP server following ``speed-updates``, and a published
model holding every user. Events for many users stream through the API; one
user is erased through ``DELETE /v1/users/{id}`` while they do, and the erasure
job runs beside the stream. Then no file under the lake holds the user, DuckDB
over the tables finds no row, serving answers them as a new user, the speed
job's state has nothing of them (also after a restart), and every other user's
events are all there, once.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pytest

from batch import erasure
from lambdarec import api_keys, audit, privacy
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import ALL_TABLES, EVENTS, PRIVACY_RECEIPTS
from speed.job import features_checkpoint_location
from tests.support.privacy import api_events, start_speed, traces
from tests.support.serving import serving, wait_until, write_model

pytestmark = [pytest.mark.integration, pytest.mark.spark]

USERS = [f"shopper-{n}" for n in range(12)]
ERASED = USERS[5]


def state_keys(spark, settings) -> list[str]:
    """The entities the features query keeps state for (Spark's state data source): a user's is their
    subject hash, never their pseudonym."""
    state = (spark.read.format("statestore").option("path", features_checkpoint_location(settings))
             .option("stateVarName", "features").load())
    return [str(row[0]) for row in state.selectExpr("to_json(key)").collect()]


def test_a_user_erased_mid_stream_is_gone_from_every_layer(spark, broker_settings):
    settings = broker_settings.model_copy(update={
        "auth": "keys", "speed_realtime": False, "speed_features_trigger_ms": 1000, "speed_state_maintenance_s": 5,
        "serve_model_poll_s": 0.5, "erasure_speed_wait_s": 120})
    lake = Lake(settings)
    key = settings.pseudonym_key
    erased = pseudonymise(ERASED, key)
    items = {f"item-{i}": [float(i % 3 == 0), float(i % 3 == 1), float(i % 3 == 2)] for i in range(7)}
    write_model(lake, 1, -1, items, {pseudonymise(u, key): {"item-1": 1.0, "item-2": 1.0} for u in USERS})

    sent: Counter[str] = Counter()
    stop = threading.Event()
    backend = {"Authorization": f"Bearer {api_keys.create(lake, 'backend', ['ingest', 'read'])[1]}"}
    admin = {"Authorization": f"Bearer {api_keys.create(lake, 'operator', ['admin'])[1]}"}
    queries = start_speed(spark, settings)
    try:
        with serving(settings) as client:
            wait_until(lambda: client.get("/ready").status_code == 200, "serving to be ready")
            client.headers.update(backend)  # the product backend's key, unless a call names the operator's

            def stream() -> None:
                while not stop.is_set():
                    for user in USERS:
                        if user == ERASED and sent[ERASED] >= 40:
                            continue  # after asking to be erased, the user stays away
                        batch = api_events(user, 4)
                        assert client.post("/v1/events/batch", json=batch).status_code == 202
                        sent[user] += len(batch)

            sender = threading.Thread(target=stream, daemon=True)
            sender.start()
            wait_until(lambda: sent[ERASED] >= 40, "the user's events to be sent")
            assert client.get("/v1/users/x/recommendations").status_code == 200
            assert client.delete(f"/v1/users/{ERASED}").status_code == 403  # the backend's key: no admin scope
            assert client.delete(f"/v1/users/{ERASED}", headers={"Authorization": "Bearer wrong"}).status_code == 401
            accepted = client.delete(f"/v1/users/{ERASED}", params={"request_id": "req-1"}, headers=admin)
            assert accepted.status_code == 202, accepted.text
            again = client.delete(f"/v1/users/{ERASED}", params={"request_id": "req-1"}, headers=admin)
            assert again.status_code == 202 and again.json()["request_id"] == "req-1"
            other = client.delete(f"/v1/users/{USERS[0]}", params={"request_id": "req-1"}, headers=admin)
            assert other.status_code == 409
            # serving forgot them at once: a new user to the model, with no speed history
            at_once = client.get(f"/v1/users/{ERASED}/recommendations").json()
            assert at_once["strategy"] in ("trending_segment", "trending_global", "popular"), at_once
            assert client.get("/v1/admin/erasures/req-1", headers=admin).json()["status"] == "pending"

            worker = threading.Thread(target=lambda: erasure.run(spark, settings), daemon=True)
            worker.start()
            receipt = wait_until(lambda: (r := client.get("/v1/admin/erasures/req-1", headers=admin).json())
                                 and r["status"] == "completed" and r, "the receipt", timeout_s=240)
            worker.join(60)
            stop.set()
            sender.join(30)

            assert receipt["removed"]["events"] == sent[ERASED]
            assert receipt["vacuum_retention_hours"] == 0 and receipt["kafka_expires_by"]
            assert "speed_state" in receipt["delete_versions"]
            assert ERASED not in str(receipt) and erased not in str(receipt)
            answer = client.get(f"/v1/users/{ERASED}/recommendations").json()
            assert answer["strategy"] in ("trending_segment", "trending_global", "popular")
            assert answer["fresh_interactions"] == 0
            assert client.get("/v1/admin/erasures/unknown-id", headers=admin).status_code == 404

            # every other user's events land, once each
            total = sum(sent.values()) - sent[ERASED]
            wait_until(lambda: lake.read_arrow(EVENTS, filter=pc.field("user_id") != erased).num_rows >= total,
                       "the other users' events to land", timeout_s=120)
    finally:
        stop.set()
        for query in queries:
            query.stop()

    users = Counter(lake.read_arrow(EVENTS).column("user_id").to_pylist())
    assert users == Counter({pseudonymise(u, key): n for u, n in sent.items() if u != ERASED})
    assert len(set(lake.read_arrow(EVENTS).column("event_id").to_pylist())) == sum(users.values())

    assert traces(Path(lake.root), [erased.encode(), ERASED.encode()]) == []  # the audit log's files too
    erasures = [(r["outcome"], r["subject"]) for r in audit.read(lake, action="user.erase")]
    assert erasures == [("pending", audit.subject_of(erased))] * 2 + [("conflict", audit.subject_of(pseudonymise(USERS[0], key)))]
    connection = duckdb.connect()
    for name, spec in ALL_TABLES.items():
        if lake.exists(spec) and "user_id" in spec.columns:
            connection.register(name, lake.dataset(spec))
            found = connection.execute(f"SELECT count(*) FROM {name} WHERE user_id = ?", [erased]).fetchall()
            assert found == [(0,)], name
    assert lake.read_arrow(PRIVACY_RECEIPTS).num_rows == 1

    subject = privacy.subject_hash(erased)
    assert not [k for k in state_keys(spark, settings) if subject in k or erased in k]
    assert [k for k in state_keys(spark, settings) if privacy.subject_hash(pseudonymise(USERS[0], key)) in k]
    queries = start_speed(spark, settings)  # a restart: the state stays clear
    try:
        from tests.support.speed import produce, message

        produce(settings, [message(user_id=pseudonymise(USERS[1], key)) for _ in range(3)])
        before = lake.version(EVENTS)
        wait_until(lambda: lake.version(EVENTS) > before, "the restarted speed job to store new events")
    finally:
        for query in queries:
            query.stop()
    assert not [k for k in state_keys(spark, settings) if subject in k]
