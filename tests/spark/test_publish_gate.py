"""The publish gate on real trainings: a worse candidate is rejected and serving keeps the champion."""

from __future__ import annotations

import pytest

from batch import gate, train
from lambdarec import registry
from lambdarec.lake import Lake
from schemas.tables import EVENTS, MODELS
from serving.views.model_store import ModelStore
from tests.support.lake import seed_lake, small_settings

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def champion(spark, tmp_path_factory):
    settings = small_settings(tmp_path_factory.mktemp("gate") / "lambdarec")
    lake = seed_lake(settings)
    summary = train.run(spark, settings, run_key="2025-03-01T00:00:00+00:00")
    assert summary["status"] == registry.PUBLISHED
    store = ModelStore(settings, lake)
    assert store.reload() and store.current.version == 1
    return settings, lake, store


def test_a_deliberately_worse_candidate_is_rejected_with_its_reason(spark, champion):
    settings, lake, store = champion
    worse = settings.model_copy(update={"als_rank": 1, "als_iterations": 1})
    summary = train.run(spark, worse, run_key="2025-03-01T01:00:00+00:00")
    assert (summary["model_version"], summary["status"]) == (2, registry.REJECTED)
    reason = summary["status_reason"]
    assert "worse than the champion" in reason or "does not beat popularity" in reason, reason
    assert registry.latest_published(lake)["model_version"] == 1
    assert not store.reload() and store.current.version == 1  # serving keeps the champion


def test_rerunning_a_data_interval_changes_no_registry_state(spark, champion):
    settings, lake, _ = champion
    before = sorted((r["model_version"], r["status"]) for r in lake.read_arrow(MODELS).to_pylist())
    versions = {spec: lake.version(spec) for spec in (MODELS, EVENTS)}
    again = train.run(spark, settings, run_key="2025-03-01T00:00:00+00:00")
    assert (again["model_version"], again["status"]) == (1, registry.PUBLISHED)
    assert gate.run(lake, settings, 1)["status"] == registry.PUBLISHED
    after = sorted((r["model_version"], r["status"]) for r in lake.read_arrow(MODELS).to_pylist())
    assert after == before and len(set(after)) == len(after)
    assert {spec: lake.version(spec) for spec in (MODELS, EVENTS)} == versions


def test_the_implicit_engine_writes_the_same_tables_and_rows(spark, champion):
    settings, lake, store = champion
    implicit = settings.model_copy(update={"als_engine": "implicit", "gate_tolerance": 0.05})
    summary = train.run(spark, implicit, run_key="2025-03-01T02:00:00+00:00")
    row = registry.current_statuses(lake)[summary["model_version"]]
    assert row["engine"] == "implicit"  # the same id as settings.als_engine
    metrics = summary["metrics"]
    assert metrics["model_recall_at_10"] > 1.5 * metrics["popularity_recall_at_10"], metrics
    assert summary["status"] == registry.PUBLISHED, summary["status_reason"]
    assert store.reload() and store.current.version == summary["model_version"]
    assert registry.latest_published(lake)["params"]["reg_scaling"] == "constant"


def test_gate_refuses_nan_factors_and_thin_coverage(settings):
    strict = settings.model_copy(update={"gate_min_item_coverage": 0.9})
    good = {"model_ndcg_at_10": 0.3, "popularity_ndcg_at_10": 0.1, "user_coverage": 1.0, "item_coverage": 1.0}
    assert gate.decide(good, None, strict)[0] == registry.PUBLISHED
    assert "NaN" in gate.decide({**good, "nan_factors": 2}, None, strict)[1]
    status, reason = gate.decide({**good, "item_coverage": 0.5}, None, strict)
    assert status == registry.REJECTED and "50.0% of active items" in reason
    champion = {"model_version": 4, "metrics": {"model_ndcg_at_10": 0.4}}
    status, reason = gate.decide(good, champion, strict)
    assert status == registry.REJECTED and "champion v4" in reason
    assert gate.decide({**good, "model_ndcg_at_10": 0.395}, champion, strict)[0] == registry.PUBLISHED
    assert Lake(strict).version(MODELS) is None
