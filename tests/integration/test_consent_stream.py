"""Consent withdrawn mid-stream: the whole platform running, one user withdraws and later grants again.

A real broker, the speed job's events and features queries on Spark, serving on a
real HTTP server, a published model holding every user. After the withdrawal is
acknowledged none of the user's later events reaches any table (also across a
restart of the speed job, which rebuilds its consent state from ``user_consent``)
and serving answers them non-personally; a new grant lets their events in again.
A consent record that is not a valid change is dead-lettered with its reason.
"""

from __future__ import annotations

import json
import time

import pyarrow.compute as pc
import pytest

from batch import erasure
from lambdarec import consent, privacy
from lambdarec.kafka_io import make_producer, send_all
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.consent import PERSONALISATION, ConsentChange
from schemas.tables import DEAD_LETTER, EVENTS, SPEED_USER_FEATURES, SPEED_USER_INTERACTIONS, USER_CONSENT
from tests.support.privacy import api_events, start_speed
from tests.support.serving import serving, wait_until, write_model

pytestmark = [pytest.mark.integration, pytest.mark.spark]

USERS = [f"reader-{n}" for n in range(6)]
CHOOSER = USERS[2]
NON_PERSONAL = ("trending_segment", "trending_global", "popular")


def change(client, granted: bool) -> dict:
    """The chooser grants or withdraws personalisation consent through the API; the answer's body."""
    time.sleep(0.01)  # "later" is measured in Kafka timestamps (ms): keep events and the change apart
    answer = client.post(f"/v1/users/{CHOOSER}/consent", json={"purpose": "personalisation", "granted": granted})
    assert answer.status_code == 202, answer.text
    time.sleep(0.01)
    return answer.json()


def test_after_a_withdrawal_no_later_event_is_stored_and_answers_are_not_personal(spark, broker_settings):
    settings = broker_settings.model_copy(update={
        "speed_realtime": False, "speed_features_trigger_ms": 1000, "serve_model_poll_s": 0.5})
    lake = Lake(settings)
    key = settings.pseudonym_key
    chooser = pseudonymise(CHOOSER, key)
    items = {f"item-{i}": [float(i % 3 == 0), float(i % 3 == 1), float(i % 3 == 2)] for i in range(7)}
    write_model(lake, 1, -1, items, {pseudonymise(u, key): {"item-1": 1.0, "item-2": 1.0} for u in USERS})

    def stored(user: str, spec=EVENTS) -> int:
        return lake.read_arrow(spec, filter=pc.field("user_id") == pseudonymise(user, key)).num_rows

    def send_round(client, n: int = 3) -> None:
        for user in USERS:
            assert client.post("/v1/events/batch", json=api_events(user, n)).status_code == 202

    def everyone_else_at(count: int) -> None:
        wait_until(lambda: all(stored(u) >= count for u in USERS if u != CHOOSER), f"{count} events per user")

    queries = start_speed(spark, settings)
    try:
        with serving(settings) as client:
            wait_until(lambda: client.get("/ready").status_code == 200, "serving to be ready")
            send_round(client)
            everyone_else_at(3)
            wait_until(lambda: stored(CHOOSER) == 3, "the chooser's first events")
            assert client.get(f"/v1/users/{CHOOSER}/recommendations").json()["strategy"] not in NON_PERSONAL

            withdrawal = change(client, False)
            assert withdrawal["erasure_request_id"] is None  # erasure_on_withdrawal is off by default
            answer = client.get(f"/v1/users/{CHOOSER}/recommendations").json()
            assert answer["strategy"] in NON_PERSONAL and answer["fresh_interactions"] == 0, answer
            assert client.get(f"/v1/users/{USERS[0]}/recommendations").json()["strategy"] not in NON_PERSONAL
            assert client.post(f"/v1/users/{CHOOSER}/consent", json={"purpose": "marketing", "granted": False}
                               ).status_code == 422

            send_round(client)
            send_round(client)
            everyone_else_at(9)
            wait_until(lambda: consent.history(lake, chooser), "the withdrawal in user_consent")
            [row] = consent.history(lake, chooser)
            assert (row["change_id"], row["granted"]) == (withdrawal["change_id"], False)

            # A record on the consent topic that is not a change: dead-lettered, nothing else.
            producer = make_producer(settings)
            try:
                send_all(producer, settings.topic_consent, [(None, json.dumps({"user_id": "raw-bob"}).encode())])
            finally:
                producer.close(timeout=5)
            send_round(client, 1)
            everyone_else_at(10)
            dead = wait_until(lambda: lake.read_arrow(DEAD_LETTER, filter=pc.field("kafka_topic")
                                                      == settings.topic_consent).to_pylist(), "the bad record's dead letter")
            assert [(d["reason"], json.loads(d["raw"])) for d in dead] == [
                ("invalid_consent:change_id", {"user_id": "[redacted]"})]  # the raw id is not kept
            assert stored(CHOOSER) == 3 and stored(CHOOSER, SPEED_USER_INTERACTIONS) == 3
            features = lake.read_arrow(SPEED_USER_FEATURES, filter=pc.field("user_id") == chooser)
            assert max(features.column("session_events").to_pylist()) == 3  # the state saw 3 events, no more

            # A new grant lets them in again, and makes the answers personal again.
            change(client, True)
            assert client.get(f"/v1/users/{CHOOSER}/recommendations").json()["strategy"] not in NON_PERSONAL
            send_round(client)
            everyone_else_at(13)
            wait_until(lambda: stored(CHOOSER) == 6, "the chooser's events after the new grant")

            # Withdrawn while the speed job is down: the restarted job rebuilds consent from the table.
            for query in queries:
                query.stop()
            queries = []
            change(client, False)
            send_round(client)
            queries = start_speed(spark, settings)
            everyone_else_at(16)
            send_round(client, 1)
            everyone_else_at(17)
    finally:
        for query in queries:
            query.stop()
    assert stored(CHOOSER) == 6 and stored(CHOOSER, SPEED_USER_INTERACTIONS) == 6
    assert [r["granted"] for r in consent.history(lake, chooser)] == [False, True, False]
    assert lake.read_arrow(USER_CONSENT).num_rows == 3  # each change stored once
    assert all(stored(u) == 17 for u in USERS if u != CHOOSER)


def test_with_erasure_on_withdrawal_a_withdrawal_erases_the_user(spark, broker_settings):
    settings = broker_settings.model_copy(update={
        "speed_realtime": False, "speed_features_trigger_ms": 1000, "erasure_on_withdrawal": True,
        "erasure_speed_wait_s": 120, "speed_state_maintenance_s": 5})
    lake = Lake(settings)
    chooser = pseudonymise(CHOOSER, settings.pseudonym_key)
    bystander = ConsentChange.new(pseudonymise("bystander", settings.pseudonym_key), PERSONALISATION, True)
    queries = start_speed(spark, settings)
    try:
        with serving(settings) as client:
            assert client.post("/v1/events/batch", json=api_events(CHOOSER, 4)).status_code == 202
            wait_until(lambda: lake.read_arrow(EVENTS).num_rows == 4, "the user's events")
            answer = change(client, False)
        request_id = answer["erasure_request_id"]
        assert request_id == consent.erasure_request_id(answer["change_id"])
        wait_until(lambda: privacy.request(lake, request_id), "the speed job to record the erasure")
        [receipt] = erasure.run(spark, settings)
        # a later change makes the events query read the topic again: the erased withdrawal stays gone
        send_all(make_producer(settings), settings.topic_consent, [(None, bystander.to_message())])
        wait_until(lambda: consent.history(lake, bystander.user_id), "a later consent change to be stored")
    finally:
        for query in queries:
            query.stop()
    assert receipt["request_id"] == request_id and receipt["removed"]["events"] == 4
    assert receipt["removed"]["user_consent"] == 1  # the withdrawal itself named them
    assert consent.history(lake, chooser) == [] and privacy.pending(lake) == []
    assert lake.read_arrow(EVENTS, filter=pc.field("user_id") == chooser).num_rows == 0
