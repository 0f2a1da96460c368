"""The publish gate's bookkeeping on a real registry (delta-rs, no JVM)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from batch import gate, registry
from lambdarec.lake import Lake
from schemas.tables import ITEM_FACTORS, MODELS, USER_FACTORS

pytestmark = pytest.mark.unit

GOOD = {"model_recall_at_10": 0.3, "popularity_recall_at_10": 0.1, "user_coverage": 1.0, "item_coverage": 1.0}


def candidate(lake: Lake, version: int, vectors: list[list[float]], metrics=GOOD) -> None:
    for spec, col in ((USER_FACTORS, "user"), (ITEM_FACTORS, "item")):
        rows = [
            {"model_version": version, f"{col}_index": i, f"{col}_id": f"{col}-{i}", "factors": v}
            for i, v in enumerate(vectors)
        ]
        lake.append_arrow(spec, pa.Table.from_pylist(rows, schema=spec.schema))
    registry.record_status(lake, version, registry.CANDIDATE, "trained", metrics=metrics, engine="spark-als")


def test_a_sound_candidate_is_published_once(settings):
    lake = Lake(settings)
    candidate(lake, 1, [[0.1, 0.2], [0.3, 0.4]])
    assert gate.run(lake, settings, 1)["status"] == registry.PUBLISHED
    rows = lake.read_arrow(MODELS).num_rows
    assert gate.run(lake, settings, 1)["status"] == registry.PUBLISHED
    assert lake.read_arrow(MODELS).num_rows == rows
    assert registry.latest_published(lake)["engine"] == "spark-als"


def test_nan_factors_in_the_lake_are_caught_even_if_metrics_missed_them(settings):
    lake = Lake(settings)
    candidate(lake, 1, [[0.1, 0.2], [float("nan"), 0.4], [0.5, float("inf")]])
    assert gate.nan_vectors(lake, 1) == 4  # two bad vectors in each of the two tables
    summary = gate.run(lake, settings, 1)
    assert summary["status"] == registry.REJECTED and "NaN" in summary["status_reason"]
    assert registry.latest_published(lake) is None


def test_only_candidates_can_be_gated(settings):
    lake = Lake(settings)
    with pytest.raises(LookupError):
        gate.run(lake, settings, 7)
    registry.record_status(lake, 7, registry.TRAINING, "started")
    with pytest.raises(RuntimeError, match="not a candidate"):
        gate.run(lake, settings, 7)
