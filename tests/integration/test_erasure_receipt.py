"""Erasure under load: one user erased mid-stream is gone from every layer, and after the receipt every file
under the root that still holds them is a place the receipt names, with the time it is gone.

The whole platform runs: a real broker, the speed job's events, features and
dimensions queries on Spark, serving on a real HTTP server in keys mode, a
published model holding every user, and the erasure job following requests
(``erase --follow``, in a thread). Debezium is not run: the test writes
the change records it would write for the operational ``users`` table (raw ids in
their keys) to the CDC users topic itself, and there is no Postgres. Python's
logs go to a file under the root, beside the broker's own log.

Events stream for many users; one user is erased mid-stream through
``DELETE /v1/users/{id}`` with the operator's key (the backend's is refused; the request id
is idempotent and cannot name another user). Serving forgets them at once. Once the receipt is complete, every file under the
root (lake, checkpoints, broker log dirs, logs, serving's model cache) is read
(``tests.support.byte_scan``) for the user's pseudonym and raw id, and each hit
must be in a place the receipt names, with a time still ahead
(``tests.support.receipt_check``). The features query's state (RocksDB SST files,
decoded) keeps nothing of the user: before the erasure it holds their subject
hash, after the receipt no SST file does, nor any deletion entry, also after a restart. Every other user's
events are all there, once; DuckDB over the tables finds no row of the user; the audit log holds their subject
hash only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from batch import erasure
from lambdarec import api_keys, audit, privacy
from lambdarec.kafka_io import make_producer, send_all
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.cdc import USERS, topic as cdc_topic
from schemas.tables import ALL_TABLES, EVENTS, PRIVACY_REQUESTS, SPEED_USER_FEATURES, USER_CONSENT, USER_PROFILES
from serving.logs import JsonFormatter
from speed.job import features_checkpoint_location, run_dimensions
from tests.support.byte_scan import scan
from tests.support.privacy import api_events, start_speed
from tests.support.receipt_check import place_of, unaccounted
from tests.support.serving import serving, wait_until, write_model
from tests.support.speed import message, produce

pytestmark = [pytest.mark.integration, pytest.mark.spark]

USERS_RAW = [f"member-{n:03d}" for n in range(8)]
ERASED = USERS_RAW[3]
SPEED_UPDATES_RETENTION_MS = 7_200_000  # set on the topic itself: the receipt must read it from there


def cdc_user(raw: str, lsn: int) -> tuple[bytes, bytes]:
    """A Debezium insert of ``raw`` into the operational users table, as the connector writes it."""
    row = {"user_id": raw, "country": "DE", "age_band": "25-34", "signup_date": 19000, "membership": "gold",
           "updated_at": "2026-11-30T12:00:00Z"}
    return (json.dumps({"user_id": raw}).encode(),
            json.dumps({"op": "c", "source": {"lsn": lsn}, "before": None, "after": row}).encode())


def state_keys(spark, settings) -> list[str]:
    """The entities the features query keeps state for (Spark's state data source): a user's is their
    subject hash, never their pseudonym."""
    state = (spark.read.format("statestore").option("path", features_checkpoint_location(settings))
             .option("stateVarName", "features").load())
    return [str(row[0]) for row in state.selectExpr("to_json(key)").collect()]


def test_a_user_erased_mid_stream_is_gone_but_where_the_receipt_says_until_when(spark, broker_settings):
    settings = broker_settings.model_copy(update={
        "auth": "keys", "speed_realtime": False, "speed_features_trigger_ms": 1000, "speed_state_maintenance_s": 5,
        "serve_model_poll_s": 0.5, "erasure_speed_wait_s": 240, "erasure_poll_s": 0.5})
    root = Path(settings.root).resolve()
    lake, key = Lake(settings), settings.pseudonym_key
    erased = pseudonymise(ERASED, key)
    subject = privacy.subject_hash(erased)
    items = {f"item-{i}": [float(i % 3 == 0), float(i % 3 == 1), float(i % 3 == 2)] for i in range(7)}
    write_model(lake, 1, -1, items, {pseudonymise(u, key): {"item-1": 1.0} for u in USERS_RAW})
    backend = {"Authorization": f"Bearer {api_keys.create(lake, 'backend', ['ingest', 'consent', 'read'])[1]}"}
    operator = {"Authorization": f"Bearer {api_keys.create(lake, 'operator', ['admin'])[1]}"}
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topic_speed_updates,
                                        configs={"retention.ms": str(SPEED_UPDATES_RETENTION_MS)})])
    admin.close()
    log_file = root / "platform" / "logs" / "platform.log"
    log_file.parent.mkdir(parents=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)

    sent: Counter[str] = Counter()
    stop_stream, stop_erasing = threading.Event(), threading.Event()
    queries = [*start_speed(spark, settings), run_dimensions(spark, settings)]
    try:
        users_topic = cdc_topic(settings.cdc_topic_prefix, USERS.table)
        send_all(make_producer(settings), users_topic, [cdc_user(u, 100 + n) for n, u in enumerate(USERS_RAW)])
        with serving(settings) as client:
            wait_until(lambda: client.get("/ready").status_code == 200, "serving to be ready")
            client.headers.update(backend)  # the product backend's key, unless a call names the operator's
            assert client.post(f"/v1/users/{ERASED}/consent", json={"granted": True}).status_code == 202

            def stream() -> None:
                while not stop_stream.is_set():
                    for user in USERS_RAW:
                        if user == ERASED and sent[ERASED] >= 24:
                            continue  # after asking to be erased, the user stays away
                        assert client.post("/v1/events/batch", json=api_events(user, 4)).status_code == 202
                        sent[user] += 4

            sender = threading.Thread(target=stream, daemon=True)
            sender.start()
            only = pc.field("user_id") == erased
            wait_until(lambda: sent[ERASED] >= 24 and lake.read_arrow(EVENTS, filter=only).num_rows == 24
                       and lake.read_arrow(SPEED_USER_FEATURES, filter=only).num_rows
                       and lake.read_arrow(USER_PROFILES, filter=only).num_rows
                       and lake.read_arrow(USER_CONSENT, filter=only).num_rows,
                       "the user in every layer", timeout_s=180)
            before = scan(root, [erased, ERASED, subject])
            assert {place_of(h.path) for h in before if h.needle == erased} >= {
                "lake:events", "lake:speed_user_features", "lake:user_profiles", "lake:user_consent",
                "kafka:events", "kafka:speed-updates", "kafka:consent"}, before
            assert any(h.kind == "sst" and h.needle == subject for h in before)  # the scan reads the state
            assert not any(h.needle in (erased, ERASED) and place_of(h.path) == "speed_state" for h in before)
            assert f"kafka:{users_topic}" in {place_of(h.path) for h in before if h.needle == ERASED}

            assert client.delete(f"/v1/users/{ERASED}").status_code == 403  # the backend's key: no admin scope
            assert client.delete(f"/v1/users/{ERASED}", headers={"Authorization": "Bearer wrong"}).status_code == 401
            accepted = client.delete(f"/v1/users/{ERASED}", params={"request_id": "scan-1"}, headers=operator)
            assert accepted.status_code == 202, accepted.text
            again = client.delete(f"/v1/users/{ERASED}", params={"request_id": "scan-1"}, headers=operator)
            assert again.status_code == 202 and again.json()["request_id"] == "scan-1"
            other = client.delete(f"/v1/users/{USERS_RAW[0]}", params={"request_id": "scan-1"}, headers=operator)
            assert other.status_code == 409
            # serving forgot them at once: a new user to the model, with no speed history
            at_once = client.get(f"/v1/users/{ERASED}/recommendations").json()
            assert at_once["strategy"] in ("trending_segment", "trending_global", "popular"), at_once
            assert client.get("/v1/admin/erasures/scan-1", headers=operator).json()["status"] == "pending"
            follower = threading.Thread(target=erasure.follow, args=(spark, settings, stop_erasing.is_set),
                                        daemon=True)
            follower.start()
            receipt = wait_until(lambda: (r := client.get("/v1/admin/erasures/scan-1", headers=operator).json())
                                 and r["status"] == "completed" and r, "the receipt", timeout_s=420)
            stop_erasing.set()
            follower.join(120)
            stop_stream.set()
            sender.join(30)

            hits = scan(root, [erased, ERASED])
            scanned_at = dt.datetime.now(dt.UTC)

            assert receipt["removed"]["events"] == sent[ERASED]
            answer = client.get(f"/v1/users/{ERASED}/recommendations").json()
            assert answer["strategy"] in ("trending_segment", "trending_global", "popular")
            assert answer["fresh_interactions"] == 0
            assert client.get("/v1/admin/erasures/unknown-id", headers=operator).status_code == 404
            total = sum(sent.values()) - sent[ERASED]  # every other user's events land, once each
            wait_until(lambda: lake.read_arrow(EVENTS, filter=pc.field("user_id") != erased).num_rows >= total,
                       "the other users' events to land", timeout_s=120)
    finally:
        stop_stream.set()
        stop_erasing.set()
        for query in queries:
            query.stop()
        logging.getLogger().removeHandler(handler)
        handler.close()

    problems = unaccounted(hits, receipt)
    assert problems == [], "\n".join(problems)
    places = {p["place"]: p for p in receipt["places"]}
    for hit in hits:  # what is still there is gone later than now, by the receipt
        place = places[place_of(hit.path)]
        assert place["status"] == "operator" or dt.datetime.fromisoformat(place["gone_by"]) > scanned_at, hit
    assert {place_of(h.path) for h in hits} <= {f"kafka:{t}" for t in ("events", "speed-updates", "consent")} | {
        f"kafka:{users_topic}"}, hits
    assert ERASED not in json.dumps(receipt) and erased not in json.dumps(receipt)

    # the features state: nothing of the user in any SST entry, no deletion entry left behind
    state = [h for h in scan(root / "checkpoints", [subject]) if h.kind in ("sst", "sst-deletions")]
    assert state == [], state
    assert places["speed_state"]["status"] == "removed"
    # each topic's time comes from the topic's own retention
    assert f"retention.ms={SPEED_UPDATES_RETENTION_MS}" in places["kafka:speed-updates"]["detail"]
    assert f"retention.ms={settings.topic_retention_ms}" in places["kafka:events"]["detail"]
    speed_updates_by = dt.datetime.fromisoformat(places["kafka:speed-updates"]["gone_by"])
    events_by = dt.datetime.fromisoformat(places["kafka:events"]["gone_by"])
    assert events_by - speed_updates_by > dt.timedelta(hours=20)  # 1 day against 2 hours
    assert receipt["kafka_expires_by"] == places["kafka:events"]["gone_by"]
    assert places[f"kafka:{users_topic}"]["status"] == "operator" and places[f"kafka:{users_topic}"]["within_ms"]
    assert places["operational_db"]["status"] == "operator"
    assert places["lake:privacy_requests"]["status"] == "removed"
    assert {p["place"] for p in receipt["places"]} >= {"lake:events", "lake:user_profiles", "models", "serving"}
    assert lake.read_arrow(PRIVACY_REQUESTS, filter=pc.field("user_id").is_valid()).num_rows == 0

    users = Counter(lake.read_arrow(EVENTS).column("user_id").to_pylist())
    assert users == Counter({pseudonymise(u, key): n for u, n in sent.items() if u != ERASED})
    assert len(set(lake.read_arrow(EVENTS).column("event_id").to_pylist())) == sum(users.values())
    erasures = [(r["outcome"], r["subject"]) for r in audit.read(lake, action="user.erase")]
    assert erasures == [("pending", audit.subject_of(erased))] * 2 + [("conflict", audit.subject_of(pseudonymise(USERS_RAW[0], key)))]
    connection = duckdb.connect()
    for name, spec in ALL_TABLES.items():
        if lake.exists(spec) and "user_id" in spec.columns:
            connection.register(name, lake.dataset(spec))
            found = connection.execute(f"SELECT count(*) FROM {name} WHERE user_id = ?", [erased]).fetchall()
            assert found == [(0,)], name

    assert not [k for k in state_keys(spark, settings) if subject in k or erased in k]
    assert [k for k in state_keys(spark, settings) if privacy.subject_hash(pseudonymise(USERS_RAW[0], key)) in k]
    queries = start_speed(spark, settings)  # a restart: the state stays clear
    try:
        produce(settings, [message(user_id=pseudonymise(USERS_RAW[1], key)) for _ in range(3)])
        before = lake.version(EVENTS)
        wait_until(lambda: lake.version(EVENTS) > before, "the restarted speed job to store new events")
    finally:
        for query in queries:
            query.stop()
    assert not [k for k in state_keys(spark, settings) if subject in k]
