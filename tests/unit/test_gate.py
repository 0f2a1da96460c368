"""The publish gate's bookkeeping on a real registry (delta-rs, no JVM)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from batch import gate
from lambdarec import registry
from lambdarec.lake import Lake
from lambdarec.model_bundle import local_path, model_bundle_uri
from schemas.tables import ITEM_FACTORS, MODELS, USER_FACTORS
from serving.views.model import open_model
from lambdarec.confidence import Confidence

pytestmark = pytest.mark.unit

GOOD = {"model_ndcg_at_10": 0.3, "popularity_ndcg_at_10": 0.1, "user_coverage": 1.0, "item_coverage": 1.0}


def candidate(lake: Lake, version: int, vectors: list[list[float]], metrics=GOOD) -> None:
    for spec, col in ((USER_FACTORS, "user"), (ITEM_FACTORS, "item")):
        rows = [
            {"model_version": version, f"{col}_index": i, f"{col}_id": f"{col}-{i}", "factors": v}
            for i, v in enumerate(vectors)
        ]
        lake.append_arrow(spec, pa.Table.from_pylist(rows, schema=spec.schema))
    registry.record_status(lake, version, registry.CANDIDATE, "trained", metrics=metrics, engine="spark-als",
                           source_events_version=3, params={"regParam": 0.1, "alpha": 5.0})


def test_a_sound_candidate_is_published_once(settings):
    lake = Lake(settings)
    candidate(lake, 1, [[0.1, 0.2], [0.3, 0.4]])
    assert gate.run(lake, settings, 1)["status"] == registry.PUBLISHED
    rows = lake.read_arrow(MODELS).num_rows
    assert gate.run(lake, settings, 1)["status"] == registry.PUBLISHED
    assert lake.read_arrow(MODELS).num_rows == rows
    assert registry.latest_published(lake)["engine"] == "spark"  # the candidate row said "spark-als", as older rows do


def test_publishing_writes_the_model_bundle_that_servers_map(settings):
    lake = Lake(settings)
    candidate(lake, 1, [[0.1, 0.2], [0.3, 0.4]])
    gate.run(lake, settings, 1)
    bundle = local_path(model_bundle_uri(settings, 1))
    model = open_model(bundle, loaded_at=0.0)
    assert (model.version, model.source_events_version, model.reg_param, model.confidence) == (1, 3, 0.1, Confidence("linear", 5.0))
    assert np.allclose(model.user_factors, [[0.1, 0.2], [0.3, 0.4]])
    assert model.item_positions["item-1"] == 1 and list(model.item_ids) == ["item-0", "item-1"]


def test_a_candidate_serving_cannot_load_is_rejected(settings):
    lake = Lake(settings)
    candidate(lake, 1, [[0.1, 0.2], [0.3, 0.4]])
    lake.append_arrow(ITEM_FACTORS, pa.Table.from_pylist(  # a second index for item-0
        [{"model_version": 1, "item_index": 2, "item_id": "item-0", "factors": [0.1, 0.2]}], schema=ITEM_FACTORS.schema))
    summary = gate.run(lake, settings, 1)
    assert summary["status"] == registry.REJECTED
    assert summary["status_reason"] == "serving cannot load it: model 1: item ids: duplicate id 'item-0'"
    assert registry.latest_published(lake) is None


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
