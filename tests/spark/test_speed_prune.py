"""The maintenance prune deletes speed-table rows older than the speed view's horizon through delta-spark,
keeps the rest readable by delta-rs, finds nothing to do a second time, and serving's start-up after it
loads what is left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from batch import maintenance
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.speed_updates import GLOBAL_SEGMENT
from schemas.tables import (
    SPEED_HORIZON_COLUMNS,
    SPEED_ITEM_TRENDING,
    SPEED_PROGRESS,
    SPEED_USER_FEATURES,
    SPEED_USER_INTERACTIONS,
)
from serving.views.speed.bootstrap import bootstrap
from serving.views.speed.view import SpeedView

pytestmark = pytest.mark.spark

NOW = datetime.now(UTC).replace(microsecond=0)
OLD, RECENT = NOW - timedelta(hours=5), NOW - timedelta(hours=1)


def rows(when: datetime, tag: str) -> dict:
    """One row per speed table at ``when``, named by ``tag``."""
    return {
        SPEED_USER_INTERACTIONS: {"user_id": tag, "item_id": f"i-{tag}", "event_type": "click", "weight": 1.0,
                                  "occurred_at": when, "event_id": f"e-{tag}", "events_version": 1},
        SPEED_USER_FEATURES: {"user_id": tag, "last_seen": when, "country": "DE", "counts_1h": [("click", 1)]},
        SPEED_ITEM_TRENDING: {"segment_type": GLOBAL_SEGMENT[0], "segment": GLOBAL_SEGMENT[1], "window_start": when,
                              "window_end": when + timedelta(minutes=1), "item_id": f"i-{tag}", "events": 1,
                              "weight": 1.0},
        SPEED_PROGRESS: {"query_name": tag, "recorded_at": when, "rows_in": 1},
    }


def test_the_prune_keeps_the_horizon_and_serving_starts_from_what_is_left(spark, tmp_path):
    settings = Settings(root=tmp_path / "lambdarec", spark_shuffle_partitions=2, speed_view_horizon_s=3 * 3600,
                        speed_trending_window_s=3600, allow_development_key=True)
    lake = Lake(settings)
    for batch_id, (when, tag) in enumerate(((OLD, "old"), (RECENT, "recent"))):
        for spec, values in rows(when, tag).items():  # as the speed job writes them: delta-spark appends
            table = pa.Table.from_pylist([{**values, "query_id": "q", "batch_id": batch_id}], schema=spec.schema)
            assert lake.append_spark(spec, spark.createDataFrame(table), app_id="test", txn_version=batch_id) is not None

    done = maintenance.run(spark, settings, ("prune",))

    assert done == {"pruned": {name: 1 for name in SPEED_HORIZON_COLUMNS}}
    for spec, recent in rows(RECENT, "recent").items():
        column = SPEED_HORIZON_COLUMNS[spec.name]
        left = lake.read_arrow(spec).to_pylist()  # through delta-rs, as serving reads it
        assert [row[column] for row in left] == [recent[column]], spec.name
    assert maintenance.run(spark, settings, ("prune",)) == {"pruned": {}}  # a second pass: nothing to do

    view = SpeedView(settings)
    bootstrap(lake, view)
    assert [i.item_id for i in view.interactions("recent")] == ["i-recent"] and view.interactions("old") == []
    assert view.profile("recent")["country"] == "DE"
