"""Erasure on withdrawal is not lost to a crash: the speed job's consent state records a withdrawal's erasure
request before it stores the withdrawal, so a crash between the two leaves the change to be read again.

A real broker carries the consent topic; the consent state reads it as the events
query's sink does, without Spark. The crash is a failure injected into one step
(the lake append of ``user_consent``, or the broker call that reads the events
topic's offsets for the request), after which a new consent state stands for the
restarted speed job.
"""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
from kafka.errors import KafkaTimeoutError

from lambdarec import consent, privacy
from lambdarec.kafka_io import make_producer, send_all
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.consent import PERSONALISATION, ConsentChange
from schemas.tables import PRIVACY_REQUESTS, USER_CONSENT
from speed.consent import ConsentState

pytestmark = pytest.mark.integration


def withdraw(settings, raw: str) -> ConsentChange:
    change = ConsentChange.new(pseudonymise(raw, settings.pseudonym_key), PERSONALISATION, False)
    send_all(make_producer(settings), settings.topic_consent, [(None, change.to_message())])
    return change


def erasures(lake: Lake) -> list[str]:
    return lake.read_arrow(PRIVACY_REQUESTS, filter=pc.field("kind") == privacy.ERASURE).column("request_id").to_pylist()


def test_a_crash_after_the_erasure_is_recorded_stores_the_withdrawal_on_restart(broker_settings, monkeypatch):
    settings = broker_settings.model_copy(update={"erasure_on_withdrawal": True})
    lake = Lake(settings)
    change = withdraw(settings, "leaver-1")
    request_id = consent.erasure_request_id(change.change_id)

    append = lake.append_arrow

    def killed(spec, rows, **kwargs):
        if spec is USER_CONSENT:
            raise OSError("killed while appending user_consent")
        return append(spec, rows, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(lake, "append_arrow", killed)
        with pytest.raises(OSError, match="killed"):
            ConsentState(settings, lake).refresh()
    assert erasures(lake) == [request_id]
    assert consent.history(lake) == []

    restarted = ConsentState(settings, Lake(settings))
    assert [row["change_id"] for row in restarted.refresh()] == [change.change_id]
    assert erasures(lake) == [request_id]  # recorded once, by its id
    assert [row["change_id"] for row in consent.history(lake)] == [change.change_id]
    assert restarted.refresh() == []


def test_a_broker_error_before_the_erasure_is_recorded_stores_nothing_until_the_retry(broker_settings, monkeypatch):
    settings = broker_settings.model_copy(update={"erasure_on_withdrawal": True})
    lake = Lake(settings)
    change = withdraw(settings, "leaver-2")

    def unreachable(_settings):
        raise KafkaTimeoutError("the events topic's offsets could not be read")

    with monkeypatch.context() as patch:
        patch.setattr(privacy, "events_end_offsets", unreachable)
        with pytest.raises(KafkaTimeoutError):
            ConsentState(settings, lake).refresh()
    assert erasures(lake) == [] and not lake.exists(USER_CONSENT)

    assert [row["change_id"] for row in ConsentState(settings, lake).refresh()] == [change.change_id]
    assert erasures(lake) == [consent.erasure_request_id(change.change_id)]
    assert [row["change_id"] for row in consent.history(lake)] == [change.change_id]
