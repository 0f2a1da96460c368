"""Replay determinism: a micro-batch re-run from its checkpointed offsets yields identical rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lambdarec.lake import Lake
from schemas.tables import DEAD_LETTER, EVENTS, SPEED_USER_INTERACTIONS
from speed.job import checkpoint_location
from tests.support.speed import message, produce, run_to_end

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def rows(lake: Lake, spec, key: str) -> list[dict]:
    return sorted(lake.read_arrow(spec).to_pylist(), key=lambda row: (row[key] is None, str(row[key])))


def test_a_batch_rerun_from_its_offsets_yields_identical_rows(spark, broker_settings, tmp_path):
    settings = broker_settings
    produce(settings, [message() for _ in range(12)] + [b"{broken", message(event_type="teleport")])
    run_to_end(spark, settings)
    original = Lake(settings)

    # Forget that the batches were committed, anywhere: Spark's commit log goes and the
    # lake is a fresh one. The restarted query replays them from the offsets in its log.
    commits = Path(checkpoint_location(settings)) / "commits"
    shutil.rmtree(commits)
    replay_settings = settings.model_copy(update={"lake_uri": str(tmp_path / "replay-lake")})
    run_to_end(spark, replay_settings)
    replayed = Lake(replay_settings)

    for spec, key in ((EVENTS, "event_id"), (DEAD_LETTER, "kafka_offset"), (SPEED_USER_INTERACTIONS, "event_id")):
        first = rows(original, spec, key)
        assert first and rows(replayed, spec, key) == first, spec.name
