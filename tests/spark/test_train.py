"""The training job end to end on a small generated lake: real Spark ALS, real Delta tables."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch import train, train_plan
from lambdarec import registry
from deploy.generator import bronze_table, generate_events
from lambdarec.lake import Lake
from schemas.tables import EVENTS, ITEM_FACTORS, ITEM_IDS, MODEL_INTERACTIONS, MODELS, USER_FACTORS, USER_IDS
from tests.support.lake import END, seed_lake, small_settings

pytestmark = pytest.mark.spark

OUTPUTS = (USER_FACTORS, ITEM_FACTORS, MODEL_INTERACTIONS, MODELS)


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    settings = small_settings(tmp_path_factory.mktemp("train") / "lambdarec")
    lake = seed_lake(settings)
    return settings, lake, train.run(spark, settings)


def test_model_beats_popularity_and_is_published(trained):
    _, lake, summary = trained
    metrics = summary["metrics"]
    assert summary["model_version"] == 1 and summary["source_events_version"] == 1
    assert metrics["n_eval_users"] > 100
    assert metrics["model_recall_at_10"] > 1.5 * metrics["popularity_recall_at_10"]
    assert summary["status"] == registry.PUBLISHED

    rows = sorted(lake.read_arrow(MODELS).to_pylist(), key=lambda r: r["recorded_at"])
    assert [r["status"] for r in rows] == [registry.TRAINING, registry.CANDIDATE, registry.PUBLISHED]
    published = registry.latest_published(lake)
    assert published["model_version"] == 1
    assert published["engine"] == "spark"  # the same id as settings.als_engine
    assert published["metrics"]["model_recall_at_10"] == pytest.approx(metrics["model_recall_at_10"])
    assert published["params"]["rank"] == 16
    assert published["params"]["reg_scaling"] == "per_interaction"
    assert published["params"]["split"] == "time" and published["params"]["id_mapping"] == ["user_ids", "item_ids"]
    for name in ("map_at_10", "ndcg_at_10", "precision_at_10", "catalogue_coverage_at_10"):
        assert 0 < published["metrics"][f"model_{name}"] <= 1 and f"popularity_{name}" in published["metrics"]
    assert published["metrics"]["user_coverage"] > 0.9 and published["metrics"]["nan_factors"] == 0
    assert (published["n_users"], published["n_items"]) == (summary["n_users"], summary["n_items"])


def test_factor_tables_hold_one_row_per_user_and_item(trained):
    _, lake, summary = trained
    users = lake.read_arrow(USER_FACTORS, filter=pc.field("model_version") == 1)
    items = lake.read_arrow(ITEM_FACTORS, filter=pc.field("model_version") == 1)
    interactions = lake.read_arrow(MODEL_INTERACTIONS, filter=pc.field("model_version") == 1)
    assert users.num_rows == summary["n_users"]
    assert items.num_rows == summary["n_items"]
    assert interactions.num_rows == summary["n_interactions"]
    assert sorted(users.column("user_index").to_pylist()) == list(range(summary["n_users"]))
    assert all(u.startswith("u_") for u in users.column("user_id").to_pylist())  # pseudonyms only
    assert {len(f) for f in items.column("factors").to_pylist()} == {16}
    assert pc.max(interactions.column("item_index")).as_py() < summary["n_items"]


def test_the_job_writes_through_delta_spark_keyed_by_its_transactions(trained):
    from deltalake import DeltaTable

    _, lake, summary = trained
    for spec in (USER_FACTORS, ITEM_FACTORS, MODEL_INTERACTIONS):
        assert summary["written"][spec.name] is not None
        commit = DeltaTable(lake.uri(spec)).history(1)[0]
        assert "Delta-Lake" in commit["engineInfo"] and commit["operation"] == "WRITE"
        assert lake.commit_version(spec, train.app_id(spec.name), 1) == summary["written"][spec.name]
    for spec in (USER_IDS, ITEM_IDS):  # new ids: an insert-only MERGE keyed by id
        commit = DeltaTable(lake.uri(spec)).history(1)[0]
        assert commit["operation"] == "MERGE" and "Delta-Lake" in commit["engineInfo"]
        assert lake.committed(spec, f"idmap-{spec.name}", 1)
    registry_commits = DeltaTable(lake.uri(MODELS)).history(3)
    assert all("Delta-Lake" in c["engineInfo"] and c["operation"] == "WRITE" for c in registry_commits)


def test_rerun_of_the_same_model_version_writes_nothing(spark, trained):
    settings, lake, _ = trained
    before = {spec.name: lake.version(spec) for spec in OUTPUTS}
    again = train.run(spark, settings, model_version=1)
    assert again["status"] == registry.PUBLISHED and again["written"] == {}
    assert {spec.name: lake.version(spec) for spec in OUTPUTS} == before
    assert lake.read_arrow(MODELS).num_rows == 3


def test_the_id_mapping_is_stable_across_runs(spark, trained):
    settings, lake, first = trained
    mapping = {r["user_id"]: r["user_index"] for r in lake.read_arrow(USER_IDS).to_pylist()}
    more = generate_events(300, n_users=400, n_items=300, n_clusters=6, seed=4, end=END)
    lake.append_arrow(EVENTS, bronze_table(more, settings))
    second = train.run(spark, settings)
    assert second["model_version"] == 2 and second["source_events_version"] == 2
    after = {r["user_id"]: r["user_index"] for r in lake.read_arrow(USER_IDS).to_pylist()}
    assert {u: after[u] for u in mapping} == mapping  # old ids keep their index
    assert sorted(after.values()) == list(range(len(after))) and len(after) > len(mapping)
    users = lake.read_arrow(USER_FACTORS, filter=pc.field("model_version") == 2).to_pylist()
    assert all(after[r["user_id"]] == r["user_index"] for r in users)
    assert lake.read_arrow(ITEM_IDS).num_rows == len({r["item_id"] for r in lake.read_arrow(ITEM_IDS).to_pylist()})


def test_an_interrupted_run_is_resumed_on_its_own_events_version(spark, settings):
    settings = small_settings(settings.root)
    lake = seed_lake(settings)
    # A killed run: version 1 claimed on events version 1, item factors already committed.
    registry.record_status(
        lake, 1, registry.TRAINING, "training started", app_id=train.app_id("models-training"),
        source_events_version=1,
    )
    survivor = pa.Table.from_pylist(
        [{"model_version": 1, "item_index": 0, "item_id": "item-0", "factors": [0.0] * 16}],
        schema=ITEM_FACTORS.schema,
    )
    lake.append_arrow(ITEM_FACTORS, survivor, app_id=train.app_id("item_factors"), txn_version=1)
    lake.append_arrow(EVENTS, bronze_table(generate_events(50, 5, 5, 1, seed=9, end=END), settings))

    summary = train.run(spark, settings)
    assert (summary["model_version"], summary["source_events_version"]) == (1, 1)
    assert summary["written"][ITEM_FACTORS.name] is None
    assert summary["written"][USER_FACTORS.name] is not None
    assert lake.read_arrow(ITEM_FACTORS).num_rows == 1  # the killed run's commit, not a second copy
    # The stand-in survivor holds one item's factors, so the model's interactions name items without
    # factors: the gate refuses what serving could not load, and nothing is published.
    decided = registry.current_statuses(lake)[1]
    assert decided["status"] == registry.REJECTED
    assert decided["status_reason"] == "serving cannot load it: model 1: interactions name item_index values that have no factors"
    assert registry.latest_published(lake) is None


def test_a_failed_run_is_recorded_and_the_next_takes_a_new_version(spark, settings):
    settings = small_settings(settings.root).model_copy(update={"event_weights": {"no_such_type": 1.0}})
    lake = seed_lake(settings, n_events=200)
    with pytest.raises(ValueError, match="no weighted interactions"):
        train.run(spark, settings)
    status = registry.current_statuses(lake)[1]
    assert status["status"] == registry.FAILED and "no weighted interactions" in status["status_reason"]
    assert train_plan.plan(lake, None, None) == (2, 1)


def test_training_without_events_is_a_clear_error(settings):
    with pytest.raises(RuntimeError, match="ingest events before training"):
        train_plan.plan(Lake(settings), None, None)


def test_tuning_picks_on_the_validation_metric_and_records_the_search(spark, settings):
    space = {"rank": [2, 16], "alpha": [10.0]}
    settings = small_settings(settings.root).model_copy(
        update={"tune_trials": 2, "tune_method": "grid", "tune_space": space, "als_iterations": 5, "tune_budget_s": 0,
                "als_rank": 2}  # configured too small: the search must replace it
    )
    seed_lake(settings)
    summary = train.run(spark, settings)
    params = registry.current_statuses(Lake(settings))[summary["model_version"]]["params"]
    params = json.loads(params)
    trials = params["tuning"]["trials"]
    assert [t["params"]["rank"] for t in trials] == [2, 16]
    best = max(trials, key=lambda t: t["metric"])
    assert trials[0]["configured"] and params["rank"] == best["params"]["rank"] == 16  # rank 2 cannot hold six clusters
    assert params["tuning"]["metric"] == "validation model_ndcg_at_10"
    assert summary["status"] == registry.PUBLISHED
