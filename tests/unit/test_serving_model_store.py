"""The id index behind model lookups; the store's use of published model bundles, and its
loader process and bundle cache for models published without one.

The lake is real Delta on disk; the loader is the real ``lambdarec.model_bundle`` process.
"""

import json
import threading

import numpy as np
import pytest

from lambdarec.id_index import IdIndex
from lambdarec.lake import Lake
from lambdarec.model_bundle import META, local_path, model_bundle_uri
from serving.views.model_store import ModelStore
from tests.support.serving import write_model

pytestmark = pytest.mark.unit

ITEMS = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.5, 0.5]}
RATINGS = {"u1": {"a": 2.0}, "u2": {"b": 1.0, "c": 3.0}}


def test_id_index_finds_every_id_and_nothing_else():
    ids = ["item-10", "item-2", "é-unicode", "x" * 40, "b"]
    index = IdIndex.build(ids)
    assert [index.get(i) for i in ids] == [0, 1, 2, 3, 4]
    assert index.lookup(ids + ["item-1", "item-100", "", "x" * 41, "b\0"]).tolist() == [0, 1, 2, 3, 4, -1, -1, -1, -1, -1]
    assert "b" in index and "c" not in index and len(index) == 5
    with pytest.raises(KeyError):
        index["missing"]
    assert IdIndex.build([]).get("a") is None


def test_id_index_refuses_duplicates_empty_ids_and_trailing_nul():
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        IdIndex.build(["a", "b", "a"])
    with pytest.raises(ValueError, match="NUL"):
        IdIndex.build(["a\0"])
    with pytest.raises(ValueError, match="empty"):
        IdIndex.build(["a", ""])


@pytest.fixture
def lake(settings):
    return Lake(settings)


def bundles(settings):
    return sorted(p.name.split("-")[0] for p in settings.model_cache_root.glob("v*"))


def test_a_second_store_maps_the_cached_bundle_without_a_loader(settings, lake):
    write_model(lake, 1, 5, ITEMS, RATINGS, bundle=False)
    first = ModelStore(settings, lake)
    assert first.reload()
    second = ModelStore(settings, lake)
    second._build_in_loader = lambda row, bundle: pytest.fail("the cached bundle should have been used")
    assert second.reload()
    assert second.current.directory == first.current.directory
    assert np.array_equal(second.current.user_factors, first.current.user_factors)


def test_a_bundle_that_does_not_match_the_registry_is_rebuilt(settings, lake):
    write_model(lake, 1, 5, ITEMS, RATINGS, bundle=False)
    ModelStore(settings, lake).reload()
    (bundle,) = settings.model_cache_root.glob("v*")
    meta = json.loads((bundle / META).read_text())
    (bundle / META).write_text(json.dumps({**meta, "source_events_version": 99}))
    store = ModelStore(settings, lake)
    assert store.reload()
    assert store.current.source_events_version == 5
    assert json.loads((bundle / META).read_text())["source_events_version"] == 5


def test_only_the_newest_two_bundles_are_kept(settings, lake):
    store = ModelStore(settings, lake)
    for version in (1, 2, 3):
        write_model(lake, version, version, ITEMS, RATINGS, bundle=False)
        assert store.reload()
    assert bundles(settings) == ["v2", "v3"]
    assert store.current.version == 3 and store.current.history(store.current.user_positions["u2"])[1].tolist() == [1.0, 3.0]


def test_a_cached_bundle_made_before_an_erasure_of_its_training_data_is_dropped(settings, lake):
    write_model(lake, 1, 5, ITEMS, RATINGS, bundle=False)
    store = ModelStore(settings, lake)
    assert store.reload()
    (bundle,) = settings.model_cache_root.glob("v1-*")
    built, factors = bundle.stat().st_mtime, np.array(store.current.user_factors)
    assert store.drop_cached([(5, built + 60)]) == []  # the delete is in the events it was trained on
    assert store.drop_cached([(6, built - 60)]) == []  # cached after that erasure completed: made without them
    assert store.drop_cached([(6, built + 60)]) == [1] and not bundle.exists()
    assert np.array_equal(store.current.user_factors, factors)  # the serving model's maps stay valid
    assert ModelStore(settings, lake).reload() and bundles(settings) == ["v1"]  # built again when loaded


def test_a_published_bundle_in_a_local_lake_is_mapped_in_place(settings, lake):
    write_model(lake, 1, 5, ITEMS, RATINGS)
    store = ModelStore(settings, lake)
    store._build_in_loader = lambda row, bundle: pytest.fail("the published bundle should have been used")
    assert store.reload()
    assert store.current.directory == local_path(model_bundle_uri(settings, 1))
    assert not list(settings.model_cache_root.glob("v*"))


def test_a_swap_carries_the_serving_models_factor_blocks_over_to_the_new_one(settings, lake):
    """A narrow filter's first request after a swap finds its rows gathered: the blocks of the
    serving model are rebuilt for the same items at the new model's positions, dropped items left out."""
    write_model(lake, 1, 5, ITEMS, RATINGS)
    store = ModelStore(settings, lake)
    assert store.reload()
    serving = store.current
    serving.factor_blocks.rows(np.asarray([serving.item_positions[i] for i in ("a", "b", "c")]))
    # "a" is gone, and "aa" and "ab" sort before "b" and "c", which move from positions 1 and 2
    items = {"aa": [0.2, 0.1], "ab": [0.1, 0.2], "b": [0.0, 1.0], "c": [0.5, 0.5]}
    write_model(lake, 2, 6, items, {"u1": {"b": 2.0}, "u2": {"c": 1.0}})
    assert store.reload()
    swapped = store.current
    moved = np.asarray([swapped.item_positions["b"], swapped.item_positions["c"]])
    assert moved.tolist() == [2, 3]
    assert [p.tolist() for p in swapped.factor_blocks.cached_positions()] == [[2, 3]]
    assert np.array_equal(swapped.factor_blocks.rows(moved), [items["b"], items["c"]])


def test_the_serving_processes_of_a_host_swap_one_at_a_time(settings, lake):
    """A second store on the same bundle cache waits while another holds the host's swap turn."""
    write_model(lake, 1, 5, ITEMS, RATINGS)
    holder, waiter = ModelStore(settings, lake), ModelStore(settings, lake)
    swapped = threading.Event()
    with holder._host_turn():
        worker = threading.Thread(target=lambda: waiter.reload() and swapped.set())
        worker.start()
        assert not swapped.wait(0.5) and waiter.current is None
    assert swapped.wait(10) and waiter.current.version == 1
    worker.join()
