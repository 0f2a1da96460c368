"""Privacy requests in the lake: recorded once per id, pending until the receipt, no id in a receipt."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lambdarec import privacy
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import PRIVACY_RECEIPTS, PRIVACY_REQUESTS

pytestmark = pytest.mark.unit


def test_a_request_is_recorded_once_per_id_and_an_id_cannot_name_two_users(settings):
    lake = Lake(settings)
    alice, bob = pseudonymise("alice", "k"), pseudonymise("bob", "k")
    first = privacy.record_erasure(lake, alice, "r1", "api", {0: 5, 1: 7})
    again = privacy.record_erasure(lake, alice, "r1", "api", {0: 9, 1: 9})
    assert again == first and first.events_end_offsets == {0: 5, 1: 7} and first.source == "api"
    assert lake.read_arrow(PRIVACY_REQUESTS).num_rows == 1
    with pytest.raises(privacy.RequestConflict):
        privacy.record_erasure(lake, bob, "r1", "api", {})
    assert [r.request_id for r in privacy.pending(lake)] == ["r1"]
    assert privacy.subject_hash(alice) == first.subject_hash and alice not in first.subject_hash
    assert privacy.erased_subjects(lake) == {first.subject_hash: None}


def test_request_ids_are_checked(settings):
    with pytest.raises(ValueError, match="request_id"):
        privacy.record_erasure(Lake(settings), "u_x", "x" * 200, "api", {})
    with pytest.raises(ValueError, match="request_id"):
        privacy.check_request_id("bad\nid")


def test_a_request_is_pending_until_its_receipt_even_once_its_pseudonym_is_gone(settings):
    lake = Lake(settings)
    request = privacy.record_erasure(lake, pseudonymise("carol", "k"), "r2", "cli", {})
    privacy.record_speed_tick(lake, request)  # a row of the request without its pseudonym
    assert [r.request_id for r in privacy.pending(lake)] == ["r2"]
    lake.append_arrow(PRIVACY_RECEIPTS, pa.Table.from_pylist(
        [{"request_id": "r2", "subject_hash": request.subject_hash, "received_at": request.requested_at,
          "completed_at": request.requested_at, "removed": [], "delete_versions": [], "vacuum_versions": [],
          "vacuum_retention_hours": 0, "kafka_expires_by": None, "places": []}], schema=PRIVACY_RECEIPTS.schema))
    assert privacy.pending(lake) == []
    assert privacy.receipt(lake, "r2")["places"] == []
