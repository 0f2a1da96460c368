"""Consent: the topic's message contract, the state each layer derives from ``user_consent``, and
serving's non-personal answers after a withdrawal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from lambdarec import consent
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.consent import ConsentChange, parse_message
from schemas.speed_updates import KIND_INTERACTION
from schemas.tables import USER_CONSENT
from serving.views.catalogue import build
from serving.views.consents import Consents
from serving.views.item_attributes import ItemAttributes
from serving.recommend import Query, recommend
from serving.views.speed.view import SpeedView
from tests.support.serving import speed_rows, write_model

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
ALICE, BOB = pseudonymise("alice", "k"), pseudonymise("bob", "k")


def row(user: str, granted: bool, minute: int, change_id: str | None = None) -> dict:
    at = T0 + timedelta(minutes=minute)
    change = ConsentChange(change_id=change_id or f"{user}-{minute}", user_id=user, purpose="personalisation",
                           granted=granted, changed_at=at)
    return change.to_row(0, minute, at)


def test_a_change_round_trips_through_its_message():
    change = ConsentChange.new(ALICE, "personalisation", False)
    assert parse_message(change.to_message()) == change


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{nope", "invalid_consent:json"),
    (None, "invalid_consent:json"),
    (json.dumps({"user_id": ALICE}).encode(), "invalid_consent:change_id"),
    (ConsentChange.new(ALICE, "personalisation", True).to_message().replace(ALICE.encode(), b"alice"),
     "invalid_consent:user_id"),  # a raw id never travels
    (ConsentChange.new(ALICE, "personalisation", True).to_message().replace(b"personalisation", b"marketing"),
     "invalid_consent:purpose"),
])
def test_a_bad_message_gets_a_reason_naming_the_field(raw, reason):
    assert parse_message(raw) == reason


def test_the_latest_change_decides_and_stretches_follow_the_changes():
    changes = [row(ALICE, False, 1), row(BOB, False, 2), row(ALICE, False, 3), row(ALICE, True, 5),
               row(ALICE, False, 9)]
    assert consent.withdrawn(changes) == {ALICE, BOB}
    assert consent.withdrawn(changes[:4]) == {BOB}
    assert consent.withdrawn_intervals(changes) == [
        (ALICE, T0 + timedelta(minutes=1), T0 + timedelta(minutes=5)),
        (BOB, T0 + timedelta(minutes=2), None),
        (ALICE, T0 + timedelta(minutes=9), None),
    ]


def test_serving_applies_its_own_change_at_once_and_a_poll_does_not_undo_it(settings):
    lake = Lake(settings)
    view = SpeedView(settings)
    consents = Consents(lake, view)
    consents.reload()  # no table yet: everyone consents
    assert consents.personalises(ALICE)
    change = ConsentChange.new(ALICE, "personalisation", False)
    consents.change(change, T0)
    consents.reload()
    assert not consents.personalises(ALICE) and consents.personalises(BOB)

    lake.ensure(USER_CONSENT)  # the speed job stores it, and bob's withdrawal from another producer
    lake.append_arrow(USER_CONSENT, pa.Table.from_pylist(
        [change.to_row(0, 0, T0), row(BOB, False, 1)], schema=USER_CONSENT.schema))
    consents.reload()
    assert not consents.personalises(ALICE) and not consents.personalises(BOB)
    lake.append_arrow(USER_CONSENT, pa.Table.from_pylist([row(ALICE, True, 2)], schema=USER_CONSENT.schema))
    consents.reload()
    assert consents.personalises(ALICE)


def test_a_withdrawn_user_gets_a_non_personal_answer_and_their_real_time_events_are_ignored(settings):
    lake = Lake(settings)
    write_model(lake, 1, 10, {"a": [1.0, 0.0], "b": [0.9, 0.1], "c": [0.0, 1.0]}, {ALICE: {"a": 3.0}, BOB: {"c": 1.0}})
    from serving.views.model_store import ModelStore

    store = ModelStore(settings, lake)
    assert store.reload()
    view = SpeedView(settings)
    catalogue = build(store.current, view)
    attributes = ItemAttributes(lake)
    assert recommend(catalogue, view, attributes, ALICE, Query(k=2)).strategy == "model"
    answer = recommend(catalogue, view, attributes, ALICE, Query(k=2), personal=False)
    stranger = recommend(catalogue, view, attributes, pseudonymise("nobody", "k"), Query(k=2))
    assert (answer.strategy, answer.items, answer.fresh_interactions) == ("popular", stranger.items, 0)

    view.withhold(frozenset({ALICE}))
    for user, event_id in ((ALICE, "e1"), (BOB, "e2")):  # real-time copies: no events version yet
        view.apply({"kind": KIND_INTERACTION, "event_id": event_id, "user_id": user, "item_id": "c",
                    "event_type": "click", "weight": 1.0, "occurred_at": "2026-11-30T12:00:00.000000+00:00",
                    "country": None, "device": None})
    speed_rows(view, 11, [(ALICE, "a", 1.0, "e3")])  # stored before the withdrawal: it stays
    assert [i.event_id for i in view.interactions(ALICE)] == ["e3"] and len(view.interactions(BOB)) == 1
