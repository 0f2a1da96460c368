"""Privacy requests in the lake: recorded once per id, pending until the receipt, no id in a receipt."""

from __future__ import annotations

import datetime as dt

import pytest

from lambdarec import privacy
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import PRIVACY_REQUESTS

pytestmark = pytest.mark.unit


def test_a_request_is_recorded_once_per_id_and_an_id_cannot_name_two_users(settings):
    lake = Lake(settings)
    alice, bob = pseudonymise("alice", "k"), pseudonymise("bob", "k")
    first = privacy.record_erasure(lake, alice, "r1", "api", {0: 5, 1: 7})
    again = privacy.record_erasure(lake, alice, "r1", "api", {0: 9, 1: 9})
    assert again == first and first["events_end_offsets"] == {0: 5, 1: 7}
    assert lake.read_arrow(PRIVACY_REQUESTS).num_rows == 1
    with pytest.raises(privacy.RequestConflict):
        privacy.record_erasure(lake, bob, "r1", "api", {})
    assert [r["request_id"] for r in privacy.pending(lake)] == ["r1"]
    assert privacy.subject_hash(alice) == first["subject_hash"] and alice not in first["subject_hash"]
    assert privacy.erased_subjects(lake) == {first["subject_hash"]: None}


def test_request_ids_are_checked(settings):
    with pytest.raises(ValueError, match="request_id"):
        privacy.record_erasure(Lake(settings), "u_x", "x" * 200, "api", {})
    with pytest.raises(ValueError, match="request_id"):
        privacy.check_request_id("bad\nid")


def test_kafka_copies_expire_within_retention_plus_one_segment(settings):
    at = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    expires = privacy.kafka_expires_by(settings, at)
    assert expires == at + dt.timedelta(hours=24 + 1, minutes=5)  # the defaults: 1 day, 1 h segments
    assert privacy.kafka_expires_by(settings.model_copy(update={"topic_retention_ms": -1}), at) is None
