"""An erasure job killed mid-way (SIGKILL to spark-submit, after its first table's delete) completes
the request once when run again: the same counts, one receipt, nothing of the user left."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from lambdarec import erasure_rows, privacy
from deploy.generator import user_id
from schemas.tables import DEAD_LETTER, EVENTS, PRIVACY_RECEIPTS
from tests.support.jobs import finish, start_job
from tests.support.privacy import lake_with, rows_of, totals, traces
from tests.support.serving import wait_until

pytestmark = pytest.mark.integration


def test_a_killed_erasure_completes_once_on_restart(broker_settings):
    settings = broker_settings  # the receipt reads each topic's retention from the broker
    lake, user, other = lake_with(settings, user_id(3), user_id(4))
    before, others_before, total_before = rows_of(lake, user), rows_of(lake, other), totals(lake)
    privacy.record_erasure(lake, user, "killed-1", "cli", {})

    doomed = start_job(settings, "batch/erasure.py")
    try:
        wait_until(lambda: erasure_rows.done(lake, "killed-1", EVENTS) is not None,
                   "the job's first delete (events)", timeout_s=180)
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=60)
    assert doomed.returncode == -signal.SIGKILL
    assert privacy.receipt(lake, "killed-1") is None  # killed before it finished
    assert privacy.pending(lake)[0].request_id == "killed-1"

    finish(start_job(settings, "batch/erasure.py"))
    receipt = privacy.receipt(lake, "killed-1")
    assert receipt is not None and lake.read_arrow(PRIVACY_RECEIPTS).num_rows == 1
    assert {name: receipt["removed"][name] for name in before} == {**before, DEAD_LETTER.name: 3}
    assert rows_of(lake, user) == {name: 0 for name in before} and rows_of(lake, other) == others_before
    after = totals(lake)
    for name, count in total_before.items():
        assert after[name] == count - receipt["removed"].get(name, 0), name
    assert traces(Path(lake.root), [user.encode()]) == []

    finish(start_job(settings, "batch/erasure.py"))  # a third run finds nothing to do
    assert lake.read_arrow(PRIVACY_RECEIPTS).num_rows == 1 and privacy.pending(lake) == []
