"""Model families compete on one holdout and the winner is refitted on the whole snapshot
(real Spark, real Delta, the default settings: EASE and implicit ALS, tuning on)."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from batch import train
from lambdarec import registry
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import EVENTS, ITEM_IDS, ITEM_NEIGHBOURS, MODEL_INTERACTIONS, USER_IDS
from serving.views.model_store import ModelStore
from tests.support.lake import seed_lake

pytestmark = pytest.mark.spark

METRIC = "model_ndcg_at_10"


def defaults(root) -> Settings:
    return Settings(root=root, spark_shuffle_partitions=2)


@pytest.fixture(scope="module")
def competed(spark, tmp_path_factory):
    settings = defaults(tmp_path_factory.mktemp("families") / "lambdarec")
    lake = seed_lake(settings)
    return settings, lake, train.run(spark, settings)


def test_every_family_is_tuned_and_scored_on_the_same_holdout_and_the_best_is_published(competed):
    settings, lake, summary = competed
    families = summary["metrics"]["families"]
    assert [entry["family"] for entry in families] == ["ease", "als"]
    for entry in families:
        trials = entry["tuning"]["trials"]
        assert 1 <= len(trials) <= settings.tune_trials
        assert entry["params"] | entry["tuning"]["best"]["params"] == entry["params"]  # it fitted the best trial
    best = max(families, key=lambda entry: entry[METRIC])
    assert summary["status"] == registry.PUBLISHED, summary["status_reason"]
    assert summary["engine"] == best["engine"] and summary["metrics"][METRIC] == pytest.approx(best[METRIC])
    published = registry.latest_published(lake)
    assert published["params"]["family"] == best["family"] and published["engine"] == best["engine"]


def test_the_published_model_is_refitted_on_the_whole_snapshot_including_the_holdout(competed):
    settings, lake, summary = competed
    events = lake.read_arrow(EVENTS)
    weighted = events.filter(pc.is_in(events["event_type"], pc.unique(pc.cast(list(settings.event_weights), "string"))))
    pairs = {(u, i) for u, i in zip(weighted["user_id"].to_pylist(), weighted["item_id"].to_pylist(), strict=True)}
    assert summary["n_interactions"] == len(pairs)  # every weighted pair, held-out ones included
    fitted = lake.read_arrow(MODEL_INTERACTIONS, filter=pc.field("model_version") == summary["model_version"])
    assert fitted.num_rows == len(pairs)
    user_index = {r["user_id"]: r["user_index"] for r in lake.read_arrow(USER_IDS).to_pylist()}
    item_index = {r["item_id"]: r["item_index"] for r in lake.read_arrow(ITEM_IDS).to_pylist()}
    fitted_pairs = set(zip(fitted["user_index"].to_pylist(), fitted["item_index"].to_pylist(), strict=True))
    newest: dict[str, tuple] = {}  # each user's newest event: the time holdout's first pick
    for row in weighted.select(["user_id", "item_id", "occurred_at", "event_id"]).to_pylist():
        key = (row["occurred_at"], row["event_id"])
        if row["user_id"] not in newest or key > newest[row["user_id"]][0]:
            newest[row["user_id"]] = (key, row["item_id"])
    assert {(user_index[u], item_index[item]) for u, (_, item) in newest.items()} <= fitted_pairs
    assert summary["metrics"]["n_eval_users"] > 100  # the holdout judged it before the refit


def test_a_family_that_cannot_hold_the_data_loses_and_one_that_cannot_fit_sits_out(spark, tmp_path):
    crippled = defaults(tmp_path / "lambdarec").model_copy(
        update={"tune_trials": 0, "als_rank": 1, "als_iterations": 1}
    )
    lake = seed_lake(crippled)
    summary = train.run(spark, crippled)  # rank 1 cannot hold six planted clusters: EASE wins
    assert (summary["engine"], summary["status"]) == ("ease", registry.PUBLISHED), summary
    store = ModelStore(crippled, lake)
    assert store.reload() and store.current.family == "ease"
    assert lake.read_arrow(ITEM_NEIGHBOURS, filter=pc.field("model_version") == 1).num_rows == summary["n_items"]

    no_room = crippled.model_copy(update={"ease_max_items": 10, "als_rank": 16, "als_iterations": 8})
    second = train.run(spark, no_room)
    assert second["engine"] == "implicit"
    skipped = second["metrics"]["families"][0]
    assert skipped["family"] == "ease" and "above ease_max_items (10)" in skipped["skipped"]
    assert Lake(no_room).read_arrow(ITEM_NEIGHBOURS, filter=pc.field("model_version") == 2).num_rows == 0
