"""Model loading from a Delta lake and the merge of batch and speed views.

The lake is real Delta on disk (delta-rs); the model tables are written with
pyarrow by tests/serving_support.py.
"""

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from lambdarec.registry import PUBLISHED, record_status
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import ITEM_CATALOGUE, ITEM_FACTORS
from serving.foldin import fold_in
from serving.recommend import similar
from serving.views.item_attributes import ItemAttributes
from serving.views.model_store import ModelLoadError, ModelStore
from serving.views.catalogue import CatalogueCache, build
from serving.recommend import Query
from serving.recommend import recommend as merge
from serving.views.speed.view import SpeedView
from tests.support.serving import CONFIDENCE, INDEX_ON_AND_OFF, REG, speed_rows, write_model

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


def recommend(model, view, user, k):
    """The merge as the app runs it: the model's catalogue with the view's new items."""
    catalogue = None if model is None else build(model, view)
    return merge(catalogue, view, ItemAttributes(Lake(view.settings)), user, Query(k=k))


def names(result):
    return [item.item_id for item in result.items]


def scored(result):
    return [(item.item_id, item.score) for item in result.items]


def test_loads_the_published_model(store):
    model = store.current
    assert (model.version, model.source_events_version) == (1, 10)
    assert (model.reg_param, model.confidence, model.family) == (REG, CONFIDENCE, "als")
    assert model.item_factors.shape == (10, 2) and model.user_factors.shape == (3, 2)
    items, ratings = model.history(model.user_positions["uc"])
    assert sorted(zip(model.item_ids[items], ratings, strict=True)) == [("a0", 1.0), ("b0", 5.0), ("b2", 2.0)]
    assert model.popularity[model.item_positions["b0"]] == 2.0  # users, not weight: lambdarec.popularity


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
    with pytest.raises(ModelLoadError):  # retried on the next poll, though the registry did not change
        store.reload()


def test_inconsistent_factor_lengths_are_refused(settings, lake):
    lake.append_arrow(ITEM_FACTORS, pa.table({"model_version": [4, 4], "item_index": [0, 1],
                                              "item_id": ["x", "y"], "factors": [[1.0], [1.0, 2.0]]}))
    record_status(lake, 4, PUBLISHED, "bad", source_events_version=1, params={})
    with pytest.raises(ModelLoadError, match="different lengths"):
        ModelStore(settings, lake).reload()


@INDEX_ON_AND_OFF
def test_training_user_gets_model_vector_and_no_seen_items(store, settings):
    result = recommend(store.current, SpeedView(settings), "ua", k=3)
    assert result.strategy == "model" and result.model_version == 1
    assert set(names(result)) == {"a2", "a3", "a4"}  # same taste, unseen
    scores = [item.score for item in result.items]
    assert scores == sorted(scores, reverse=True)


@INDEX_ON_AND_OFF
def test_fresh_interactions_are_folded_in(store, settings):
    view = SpeedView(settings)
    speed_rows(view, 11, [("ua", "b0", 8.0, "e1"), ("ua", "b1", 8.0, "e2"), ("ua", "b2", 8.0, "e3")])
    result = recommend(store.current, view, "ua", k=3)
    assert result.strategy == "fold_in" and result.fresh_interactions == 3
    assert names(result)[:2] == ["b4", "b3"]
    assert not {"a0", "a1", "b0", "b1", "b2"} & set(names(result))


def test_interactions_the_model_trained_on_are_not_fresh(store, settings):
    view = SpeedView(settings)
    speed_rows(view, 10, [("ua", "a0", 3.0, "e1")])  # in the snapshot and in ua's training rows
    result = recommend(store.current, view, "ua", k=10)
    assert result.strategy == "model" and result.fresh_interactions == 0
    assert "a0" not in set(names(result))


@INDEX_ON_AND_OFF
def test_snapshot_interactions_missing_from_training_are_folded_in(store, settings):
    """Held out of training (or dropped): in the snapshot, but the model never saw them."""
    view = SpeedView(settings)
    speed_rows(view, 10, [("ua", "b3", 8.0, "e1")])
    result = recommend(store.current, view, "ua", k=10)
    assert result.strategy == "fold_in" and result.fresh_interactions == 1
    assert "b3" not in set(names(result))


def test_fold_in_of_a_training_user_matches_the_stored_vector(store, settings):
    model = store.current
    position = model.user_positions["uc"]
    assert recommend(model, SpeedView(settings), "uc", k=1).strategy == "model"
    items, ratings = model.history(position)
    x = fold_in(model.item_factors, model.yty, items, ratings, model.reg_param, model.confidence)
    assert np.allclose(x, model.user_factors[position], atol=1e-6)


@INDEX_ON_AND_OFF
def test_new_user_with_fresh_interactions_gets_fold_in(store, settings):
    view = SpeedView(settings)
    speed_rows(view, 11, [("newbie", "b0", 4.0, "e1")])
    result = recommend(store.current, view, "newbie", k=2)
    assert result.strategy == "fold_in"
    assert set(names(result)) <= {f"b{n}" for n in range(1, 5)}


def test_never_seen_user_gets_popular_items(store, settings):
    result = recommend(store.current, SpeedView(settings), "stranger", k=2)
    assert result.strategy == "popular"
    assert scored(result) == [("a0", 2.0), ("b0", 2.0)]  # two users each; ties by position


def test_without_a_model_popularity_comes_from_the_speed_view(settings):
    view = SpeedView(settings)
    speed_rows(view, 1, [("u1", "x", 3.0, "e1"), ("u2", "y", 1.0, "e2"), ("u1", "z", 2.0, "e3")])
    result = recommend(None, view, "u1", k=5)
    assert result.strategy == "popular" and result.model_version is None
    assert scored(result) == [("y", 1.0)]
    assert scored(recommend(None, view, "nobody", k=2)) == [("x", 3.0), ("z", 2.0)]


def test_store_reads_pseudonymised_users(settings, lake):
    alice = pseudonymise("alice", settings.pseudonym_key)
    write_model(lake, 1, 0, ITEMS, {alice: {"a0": 1.0}})
    store = ModelStore(settings, lake)
    store.reload()
    assert alice in store.current.user_positions


@INDEX_ON_AND_OFF
def test_a_new_item_is_folded_in_from_its_users_and_becomes_recommendable(store, settings):
    model = store.current
    view = SpeedView(settings)
    speed_rows(view, 11, [("ua", "zz", 8.0, "e1"), ("uc", "zz", 1.0, "e2"), ("fan", "a2", 4.0, "e3")])
    catalogue = build(model, view)
    assert list(catalogue.new_ids) == ["zz"] and catalogue.position("zz") == len(model.item_ids)
    users = [model.user_positions["ua"], model.user_positions["uc"]]
    expected = fold_in(model.user_factors, model.xtx, np.asarray(users), np.asarray([8.0, 1.0]), REG, CONFIDENCE)
    assert np.allclose(catalogue.new_factors[0], expected, atol=1e-5)
    assert np.allclose(catalogue.yty, model.yty + np.outer(expected, expected), atol=1e-4)
    fan = recommend(model, view, "fan", k=10)
    assert fan.strategy == "fold_in" and "zz" in names(fan) and "a2" not in names(fan)
    assert "zz" not in names(recommend(model, view, "ua", k=11))  # ua has it: excluded
    nearest = similar(catalogue, ItemAttributes(Lake(settings)), "zz", Query(k=3))
    assert all(item.item_id.startswith("a") for item in nearest)  # ua's taste


def test_the_cache_looks_each_speed_view_item_up_once_per_model(store, settings):
    """The catalogue is rebuilt on every speed-view update; items already looked up are not searched again."""
    model = store.current
    view = SpeedView(settings)
    cache = CatalogueCache()
    looked_up = []
    counting = model.item_positions.lookup
    model.item_positions.lookup = lambda keys: looked_up.append(list(keys)) or counting(keys)
    speed_rows(view, 11, [("ua", "zz", 8.0, "e1"), ("ua", "a1", 1.0, "e2")])
    assert list(cache.get(model, view).new_ids) == ["zz"]
    speed_rows(view, 12, [("uc", "zz", 1.0, "e3"), ("uc", "yy", 2.0, "e4")], batch_id=1)
    assert list(cache.get(model, view).new_ids) == ["yy", "zz"]
    assert sorted(map(sorted, looked_up)) == [["a1", "zz"], ["yy"]]


def test_new_users_and_items_survive_a_model_swap_until_a_model_covers_them(store, settings, lake):
    """The Oryx pitfall: a model update must not make the speed layer's newcomers vanish."""
    view = SpeedView(settings)
    speed_rows(view, 11, [("newbie", "b0", 4.0, "e1"), ("newbie", "zz", 4.0, "e2"), ("ub", "zz", 4.0, "e3")])
    before = recommend(store.current, view, "newbie", k=3)
    write_model(lake, version=2, source_events_version=12, item_vectors=ITEMS, ratings=RATINGS)
    assert store.reload() is True
    after = recommend(store.current, view, "newbie", k=3)
    assert (before.strategy, after.strategy) == ("fold_in", "fold_in")
    assert after.model_version == 2 and after.fresh_interactions == 2
    assert names(after) == names(before) and "zz" in build(store.current, view).new_positions

    covering = {**RATINGS, "newbie": {"b0": 4.0}}  # model 3 trained on newbie's b0, still not on zz
    write_model(lake, version=3, source_events_version=12, item_vectors=ITEMS, ratings=covering)
    assert store.reload() is True
    covered = recommend(store.current, view, "newbie", k=3)
    assert covered.strategy == "fold_in" and covered.fresh_interactions == 1  # only zz is fresh now
    covering_all = {**covering, "newbie": {"b0": 4.0, "zz": 4.0}}
    write_model(lake, version=4, source_events_version=12,
                item_vectors={**ITEMS, "zz": [0.5, 1.0]}, ratings=covering_all)
    assert store.reload() is True
    assert recommend(store.current, view, "newbie", k=3).strategy == "model"
    assert build(store.current, view).new_positions == {}


def test_masks_the_serving_model_uses_are_prepared_for_the_next_one_in_paused_chunks(store, settings, lake, monkeypatch):
    monkeypatch.setattr("serving.views.item_attributes.LOOKUP_CHUNK", 2)
    view = SpeedView(settings)
    attributes = ItemAttributes(lake)
    red = ["a1", "a3", "b0", "b4", "zz"]  # zz: in the catalogue table, in neither model
    attributes.load([{"item_id": item, "updated_at": 1, "attributes": {"colour": "red"}} for item in red], version=1)
    serving = build(store.current, view)
    attributes.mask(serving, {"colour": {"red"}})
    write_model(lake, 2, 11, {**ITEMS, "c0": [0.5, 0.5]}, RATINGS)
    store.reload()
    following = build(store.current, view)
    pauses = []
    attributes.prepare(following, lambda: pauses.append(1))
    assert len(pauses) == 3  # five members, two per chunk
    monkeypatch.setattr(attributes, "_encoded", lambda *a: pytest.fail("the prepared mask was built again"))
    allowed = attributes.mask(following, {"colour": {"red"}})
    assert sorted(following.item_id(p) for p in np.flatnonzero(allowed)) == ["a1", "a3", "b0", "b4"]


def test_a_paused_swap_build_does_not_hold_up_the_serving_catalogue(store, settings, lake):
    """The swap's catalogue build waits for requests in flight; a request rebuilding the serving
    model's catalogue meanwhile must not wait for it (that would stall both until the pause gives way)."""
    view = SpeedView(settings)
    cache = CatalogueCache()
    serving = store.current
    cache.get(serving, view)
    write_model(lake, 2, 11, ITEMS, RATINGS)
    store.reload()
    speed_rows(view, 12, [("ua", "zz", 8.0, "e1")])
    paused, release = threading.Event(), threading.Event()

    def pause() -> None:
        paused.set()
        release.wait(30)

    swap = threading.Thread(target=cache.get, args=(store.current, view, pause), daemon=True)
    swap.start()
    assert paused.wait(10)
    rebuilt = threading.Thread(target=cache.get, args=(serving, view), daemon=True)
    rebuilt.start()
    rebuilt.join(5)
    done = not rebuilt.is_alive()
    release.set()
    swap.join(10)
    assert done, "the serving model's catalogue waited for the paused swap build"
    assert list(cache.get(serving, view).new_ids) == ["zz"]


def test_newcomers_are_the_available_items_of_a_category_no_model_nor_the_speed_view_knows(store, settings):
    """Newest first, per catalogue: an item the speed view learns about stops being a newcomer."""
    attributes = ItemAttributes(Lake(settings))
    day = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [{"item_id": item, "category": "alpha", "available": available, "updated_at": day + timedelta(hours=hour)}
            for hour, (item, available) in enumerate([("a0", True), ("new-1", True), ("gone", False), ("new-2", True),
                                                      ("yy", True)])]
    rows.append({"item_id": "new-b", "category": "beta", "updated_at": day})
    attributes.load(pa.Table.from_pylist(rows, schema=ITEM_CATALOGUE.schema).to_pylist(), version=1)
    view = SpeedView(settings)
    assert attributes.newcomers(build(store.current, view), "alpha") == ["yy", "new-2", "new-1"]
    speed_rows(view, 11, [("uc", "yy", 1.0, "e1")])
    assert attributes.newcomers(build(store.current, view), "alpha") == ["new-2", "new-1"]
    assert attributes.newcomers(build(store.current, view), "beta") == ["new-b"]
    assert attributes.newcomers(build(store.current, view), "gamma") == []
