"""Lake housekeeping on real Delta tables (delta-rs, no JVM)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from batch import maintenance, registry
from lambdarec.generator import bronze_table, generate_events
from lambdarec.lake import Lake
from schemas.tables import EVENTS, ITEM_FACTORS, MODELS

pytestmark = pytest.mark.unit


def n_files(lake) -> int:
    return len(lake.open(EVENTS).file_uris())


def test_compaction_keeps_every_row_and_vacuum_then_frees_the_old_files(settings):
    lake = Lake(settings)
    events = generate_events(300, 20, 30, 3, seed=1, end=datetime(2025, 3, 1, tzinfo=UTC))
    for start in range(0, 300, 30):  # ten small appends, as micro-batches would make
        lake.append_arrow(EVENTS, bronze_table(events[start : start + 30], settings))
    before = sorted(lake.read_arrow(EVENTS).column("event_id").to_pylist())
    files_before = n_files(lake)
    done = maintenance.compact(lake, [EVENTS])
    assert done["events"]["numFilesRemoved"] == files_before
    assert n_files(lake) < files_before
    assert sorted(lake.read_arrow(EVENTS).column("event_id").to_pylist()) == before
    assert maintenance.compact(lake, [EVENTS]) == {}  # nothing left to do
    assert maintenance.vacuum(lake, 0, [EVENTS]) == {"events": files_before}
    assert sorted(lake.read_arrow(EVENTS).column("event_id").to_pylist()) == before


def factors(lake, version):
    row = {"model_version": version, "item_index": 0, "item_id": "item-0", "factors": [0.1, 0.2]}
    lake.append_arrow(ITEM_FACTORS, pa.Table.from_pylist([row], schema=ITEM_FACTORS.schema))


def test_expiry_keeps_the_newest_models_and_the_champion(settings):
    lake = Lake(settings)
    for version, status in enumerate([registry.PUBLISHED, registry.REJECTED, registry.REJECTED, registry.FAILED, registry.REJECTED], 1):
        factors(lake, version)
        registry.record_status(lake, version, status, "test")
    assert maintenance.expire_models(lake, keep=2) == [2, 3]
    kept = sorted(set(lake.read_arrow(ITEM_FACTORS).column("model_version").to_pylist()))
    assert kept == [1, 4, 5]  # 1 is the champion
    statuses = registry.current_statuses(lake)
    assert [statuses[v]["status"] for v in (2, 3)] == [maintenance.EXPIRED] * 2
    assert registry.latest_published(lake)["model_version"] == 1
    rows = lake.read_arrow(MODELS).num_rows
    assert maintenance.expire_models(lake, keep=2) == []
    assert lake.read_arrow(MODELS).num_rows == rows
