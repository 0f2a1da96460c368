"""Model loading from a Delta lake and the merge of batch and speed views.

The lake is real Delta on disk (delta-rs); the model tables are written with
pyarrow by tests/serving_support.py.
"""

import numpy as np
import pyarrow as pa
import pytest

from batch.registry import PUBLISHED, record_status
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import ITEM_FACTORS
from serving.foldin import fold_in
from serving.model_store import ModelLoadError, ModelStore
from serving.recommend import recommend
from serving.speed_view import SpeedView
from tests.serving_support import ALPHA, REG, write_model

pytestmark = pytest.mark.unit

# two planted taste groups: a* items along the first factor, b* along the second
ITEMS = {
    **{f"a{n}": [1.0, 0.05 * n] for n in range(5)},
    **{f"b{n}": [0.05 * n, 1.0] for n in range(5)},
}
RATINGS = {
    "ua": {"a0": 3.0, "a1": 2.0},
    "ub": {"b0": 4.0, "b1": 1.0},
    "uc": {"a0": 1.0, "b0": 5.0, "b2": 2.0},
}


@pytest.fixture
def lake(settings):
    return Lake(settings)


@pytest.fixture
def store(settings, lake):
    write_model(lake, version=1, source_events_version=10, item_vectors=ITEMS, ratings=RATINGS)
    store = ModelStore(settings, lake)
    assert store.reload() is True
    return store


def speed_rows(view, events_version, rows, batch_id=0):
    view.apply(
        {
            "kind": "user_interactions",
            "query_id": "q",
            "batch_id": batch_id,
            "events_version": events_version,
            "rows": [
                {"user_id": u, "item_id": i, "event_type": "click", "weight": w,
                 "occurred_at": "2024-01-01T00:00:00+00:00", "event_id": e}
                for u, i, w, e in rows
            ],
        }
    )


def test_loads_the_published_model(store):
    model = store.current
    assert (model.version, model.source_events_version) == (1, 10)
    assert (model.reg_param, model.alpha) == (REG, ALPHA)
    assert model.item_factors.shape == (10, 2) and model.user_factors.shape == (3, 2)
    items, ratings = model.history(model.user_positions["uc"])
    assert sorted(zip(model.item_ids[items], ratings)) == [("a0", 1.0), ("b0", 5.0), ("b2", 2.0)]
    assert model.popularity[model.item_positions["b0"]] == 9.0


def test_reload_swaps_only_for_a_new_published_version(store, lake):
    first = store.current
    assert store.reload() is False and store.current is first
    write_model(lake, version=2, source_events_version=12, item_vectors=ITEMS, ratings=RATINGS)
    assert store.reload() is True
    assert store.current.version == 2 and first.version == 1


def test_a_broken_model_keeps_the_serving_one(store, lake):
    record_status(lake, 3, PUBLISHED, "no tables", source_events_version=13, params={})
    with pytest.raises(ModelLoadError, match="no item factors"):
        store.reload()
    assert store.current.version == 1
    assert "model 3" in store.last_error


def test_inconsistent_factor_lengths_are_refused(settings, lake):
    lake.append_arrow(ITEM_FACTORS, pa.table({"model_version": [4, 4], "item_index": [0, 1],
                                              "item_id": ["x", "y"], "factors": [[1.0], [1.0, 2.0]]}))
    record_status(lake, 4, PUBLISHED, "bad", source_events_version=1, params={})
    with pytest.raises(ModelLoadError, match="different lengths"):
        ModelStore(settings, lake).reload()


def test_training_user_gets_model_vector_and_no_seen_items(store, settings):
    result = recommend(store.current, SpeedView(settings), "ua", k=3)
    assert result.strategy == "model" and result.model_version == 1
    assert {item for item, _ in result.items} == {"a2", "a3", "a4"}  # same taste, unseen
    scores = [score for _, score in result.items]
    assert scores == sorted(scores, reverse=True)


def test_fresh_interactions_are_folded_in(store, settings):
    view = SpeedView(settings)
    speed_rows(view, 11, [("ua", "b0", 8.0, "e1"), ("ua", "b1", 8.0, "e2"), ("ua", "b2", 8.0, "e3")])
    result = recommend(store.current, view, "ua", k=3)
    assert result.strategy == "fold_in" and result.fresh_interactions == 3
    assert [item for item, _ in result.items][:2] == ["b4", "b3"]
    assert not {"a0", "a1", "b0", "b1", "b2"} & {item for item, _ in result.items}


def test_interactions_already_in_the_snapshot_are_not_fresh(store, settings):
    view = SpeedView(settings)
    speed_rows(view, 10, [("ua", "b3", 8.0, "e1")])
    result = recommend(store.current, view, "ua", k=10)
    assert result.strategy == "model" and result.fresh_interactions == 0
    assert "b3" not in {item for item, _ in result.items}  # but still excluded


def test_fold_in_of_a_training_user_matches_the_stored_vector(store, settings):
    model = store.current
    position = model.user_positions["uc"]
    view = SpeedView(settings)
    speed_rows(view, 11, [("uc", "zz-new-item", 1.0, "e1")])  # fresh, but unknown to the model
    assert recommend(model, view, "uc", k=1).strategy == "model"
    items, ratings = model.history(position)
    x = fold_in(model.item_factors, model.yty, items, ratings, model.reg_param, model.alpha)
    assert np.allclose(x, model.user_factors[position], atol=1e-6)


def test_new_user_with_fresh_interactions_gets_fold_in(store, settings):
    view = SpeedView(settings)
    speed_rows(view, 11, [("newbie", "b0", 4.0, "e1")])
    result = recommend(store.current, view, "newbie", k=2)
    assert result.strategy == "fold_in"
    assert {item for item, _ in result.items} <= {f"b{n}" for n in range(1, 5)}


def test_never_seen_user_gets_popular_items(store, settings):
    result = recommend(store.current, SpeedView(settings), "stranger", k=2)
    assert result.strategy == "popular"
    assert result.items == [("b0", 9.0), ("a0", 4.0)]


def test_without_a_model_popularity_comes_from_the_speed_view(settings):
    view = SpeedView(settings)
    speed_rows(view, 1, [("u1", "x", 3.0, "e1"), ("u2", "y", 1.0, "e2"), ("u1", "z", 2.0, "e3")])
    result = recommend(None, view, "u1", k=5)
    assert result.strategy == "popular" and result.model_version is None
    assert result.items == [("y", 1.0)]
    assert recommend(None, view, "nobody", k=2).items == [("x", 3.0), ("z", 2.0)]


def test_store_reads_pseudonymised_users(settings, lake):
    alice = pseudonymise("alice", settings.pseudonym_key)
    write_model(lake, 1, 0, ITEMS, {alice: {"a0": 1.0}})
    store = ModelStore(settings, lake)
    store.reload()
    assert alice in store.current.user_positions
