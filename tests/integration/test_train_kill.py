"""A training job killed mid-way (SIGKILL to spark-submit) changes nothing that serves,
and re-running the same data interval converges on one registry state."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime

import pytest

from lambdarec import registry
from deploy.generator import bronze_table, generate_events
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import EVENTS, MODELS
from serving.views.model_store import ModelStore
from tests.support.jobs import finish, start_job
from tests.support.serving import wait_until

pytestmark = pytest.mark.integration

END = datetime(2025, 3, 1, tzinfo=UTC)


def submit(settings: Settings, run_key: str) -> subprocess.Popen:
    return start_job(settings, "batch/train.py", ["--run-key", run_key])


def registry_state(lake: Lake) -> list[tuple]:
    return sorted((r["model_version"], r["status"], r["source_events_version"]) for r in lake.read_arrow(MODELS).to_pylist())


def test_a_killed_run_leaves_the_champion_serving_and_a_rerun_converges(tmp_path):
    settings = Settings(root=tmp_path / "lambdarec", spark_shuffle_partitions=2, als_rank=16, als_iterations=15)
    lake = Lake(settings)
    lake.append_arrow(EVENTS, bronze_table(generate_events(3000, 120, 240, 6, seed=5, end=END), settings))
    finish(submit(settings, "2025-03-01T00:00:00+00:00"))
    store = ModelStore(settings, lake)
    assert store.reload() and store.current.version == 1

    lake.append_arrow(EVENTS, bronze_table(generate_events(500, 120, 240, 6, seed=6, end=END), settings))
    doomed = submit(settings, "2025-03-01T01:00:00+00:00")
    try:
        wait_until(lambda: registry.current_statuses(lake).get(2, {}).get("status") == registry.TRAINING,
                   "the second run to claim model version 2", timeout_s=120)
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=60)
    assert doomed.returncode == -signal.SIGKILL
    assert registry.latest_published(lake)["model_version"] == 1
    assert not store.reload() and store.current.version == 1

    finish(submit(settings, "2025-03-01T01:00:00+00:00"))
    state = registry_state(lake)
    assert [s for s in state if s[0] == 2][0][2] == 2  # version 2 kept its pinned events version
    assert registry.current_statuses(lake)[2]["status"] in (registry.PUBLISHED, registry.REJECTED)
    finish(submit(settings, "2025-03-01T01:00:00+00:00"))
    assert registry_state(lake) == state and len(set(state)) == len(state)
