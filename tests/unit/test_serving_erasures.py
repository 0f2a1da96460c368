"""What serving takes from the privacy tables: a pending request hides the user from every model, a receipt from
the models trained before its delete, and each new receipt tells the model store which cached bundles to drop."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from lambdarec import privacy
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import PRIVACY_RECEIPTS
from serving.views.erasures import Erasures
from serving.views.speed.view import SpeedView

pytestmark = pytest.mark.unit

DONE = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)


def test_receipts_reach_the_model_store_once_each_and_pending_users_stay_hidden(settings):
    lake = Lake(settings)
    heard: list[list[tuple[int, float]]] = []
    erasures = Erasures(lake, SpeedView(settings), on_receipts=heard.append)
    user = pseudonymise("dana", "k")
    request = privacy.record_erasure(lake, user, "r1", "api", {})
    erasures.reload()
    assert heard == [[]] and erasures.hides(user, 10**6)  # pending: every model's row of them is unused

    lake.append_arrow(PRIVACY_RECEIPTS, pa.Table.from_pylist(
        [{"request_id": "r1", "subject_hash": request.subject_hash, "received_at": request.requested_at,
          "completed_at": DONE, "removed": [("events", 3)], "delete_versions": [("events", 7)],
          "vacuum_versions": [], "vacuum_retention_hours": 0, "kafka_expires_by": None, "places": []}],
        schema=PRIVACY_RECEIPTS.schema))
    erasures.reload()
    erasures.reload()  # nothing new: not told again
    assert heard == [[], [(7, DONE.timestamp())]]
    assert erasures.hides(user, 6) and not erasures.hides(user, 7)
