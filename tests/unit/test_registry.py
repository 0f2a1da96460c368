"""The registry status log on a real Delta table (delta-rs, no JVM)."""

from __future__ import annotations

import pytest

from lambdarec import registry
from lambdarec.lake import Lake
from schemas.tables import MODELS

pytestmark = pytest.mark.unit


@pytest.fixture
def lake(settings) -> Lake:
    return Lake(settings)


def test_empty_registry(lake):
    assert registry.latest_published(lake) is None
    assert registry.next_model_version(lake) == 1


def test_latest_published_follows_the_newest_status(lake):
    registry.record_status(lake, 1, registry.PUBLISHED, "first", metrics={"model_recall_at_10": 0.2})
    registry.record_status(lake, 2, registry.PUBLISHED, "better", metrics={"model_recall_at_10": 0.3})
    assert registry.latest_published(lake)["model_version"] == 2
    assert registry.latest_published(lake)["metrics"] == {"model_recall_at_10": 0.3}

    registry.record_status(lake, 2, "rolled_back", "bad online metrics")
    assert registry.latest_published(lake)["model_version"] == 1
    registry.record_status(lake, 3, registry.CANDIDATE, "not yet")
    assert registry.latest_published(lake)["model_version"] == 1
    assert registry.next_model_version(lake) == 4


def test_app_id_records_a_status_once(lake):
    assert registry.record_status(lake, 1, registry.CANDIDATE, "trained", app_id="train-models-candidate")
    assert not registry.record_status(lake, 1, registry.CANDIDATE, "trained", app_id="train-models-candidate")
    assert lake.read_arrow(MODELS).num_rows == 1


def test_unknown_fields_are_refused(lake):
    with pytest.raises(ValueError, match="unknown registry columns"):
        registry.record_status(lake, 1, registry.CANDIDATE, "x", accuracy=1.0)


def test_rows_from_before_the_names_were_unified_read_in_todays_names(lake):
    """Older rows say ``spark-als`` and Spark ML's ``regParam``/``maxIter``; readers see settings' names."""
    registry.record_status(lake, 1, registry.PUBLISHED, "old", engine="spark-als",
                           params={"rank": 8, "regParam": 0.1, "alpha": 5.0, "maxIter": 4})
    row = registry.latest_published(lake)
    assert row["engine"] == "spark"
    assert row["params"] == {"rank": 8, "reg": 0.1, "alpha": 5.0, "iterations": 4}
    assert registry.current_statuses(lake)[1]["engine"] == "spark"
