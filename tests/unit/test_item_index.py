"""The item index: built into an ALS model's bundle, searched by serving, exact where it must be.

A real faiss HNSW index over a published model's bundle (no mocks): ``Catalogue.top``
with the index must rank as exact scoring does, and fall back to exact scoring
when the filters or exclusions leave the index's candidates too few.
"""

from dataclasses import replace

import numpy as np
import pytest

from lambdarec.item_index import ITEM_INDEX
from lambdarec.lake import Lake
from serving.views.catalogue import build
from serving.foldin import top_k
from serving.views.model_store import ModelStore
from serving.views.speed.view import SpeedView
from tests.support.serving import write_model

pytestmark = pytest.mark.unit

N_ITEMS, RANK = 2_000, 16


@pytest.fixture
def catalogue(settings):
    rng = np.random.default_rng(7)
    items = {f"i{n:04d}": list(rng.standard_normal(RANK)) for n in range(N_ITEMS)}
    write_model(Lake(settings), 1, 10, items, {"u": {"i0000": 1.0}})
    store = ModelStore(settings, Lake(settings))
    store.reload()
    return build(store.current, SpeedView(settings))


def exact(catalogue, vector, k, blocked, allowed):
    return top_k(catalogue.scores(vector), k, blocked, allowed)


def test_the_bundle_ships_the_index_and_serving_loads_it(catalogue, settings):
    assert (catalogue.model.directory / ITEM_INDEX).is_file()
    assert catalogue.model.item_index is not None
    settings_off = settings.model_copy(update={"serve_ann_ef": 0})
    store = ModelStore(settings_off, Lake(settings_off))
    store.reload()
    assert store.current.item_index is None  # the same bundle, scored exactly


def test_serving_maps_the_index_file_rather_than_copying_it(catalogue):
    """Every serving process on a host shares the mapped file, and a swap's load copies none of it."""
    path = str(catalogue.model.item_index.path)
    with open("/proc/self/maps") as maps:
        assert any(line.rstrip().endswith(path) for line in maps)


def test_recall_at_10_against_exact_scoring(catalogue):
    rng = np.random.default_rng(8)
    no_block = np.empty(0, dtype=np.int64)
    found = []
    for vector in rng.standard_normal((100, RANK)).astype(np.float32):
        plan = catalogue.candidates(vector, 10, no_block, None)
        assert plan is not None and not plan[1]  # the index's neighbours, not every item
        found.append(len(set(catalogue.top(vector, 10, no_block, None)[0]) & set(exact(catalogue, vector, 10, no_block, None))) / 10)
    assert np.mean(found) >= 0.95


def test_blocked_and_filtered_items_never_come_back_and_scores_are_exact(catalogue):
    vector = np.random.default_rng(9).standard_normal(RANK).astype(np.float32)
    blocked = np.sort(exact(catalogue, vector, 5, np.empty(0, dtype=np.int64), None))
    allowed = np.zeros(N_ITEMS, dtype=bool)
    allowed[::2] = True  # half the items pass the filter: the index's neighbours are the candidates
    assert catalogue.candidates(vector, 10, blocked, allowed)[1] is False
    positions, scores = catalogue.top(vector, 10, blocked, allowed)
    assert not set(positions) & set(blocked) and allowed[positions].all()
    assert np.allclose(scores, catalogue.scores(vector)[positions])
    assert list(positions) == list(exact(catalogue, vector, 10, blocked, allowed))


def test_a_narrow_filter_scores_exactly_the_items_it_passes(catalogue):
    vector = np.random.default_rng(10).standard_normal(RANK).astype(np.float32)
    allowed = np.zeros(N_ITEMS, dtype=bool)
    allowed[[3, 700, 1999]] = True
    no_block = np.empty(0, dtype=np.int64)
    plan = catalogue.candidates(vector, 10, no_block, allowed)
    assert plan is not None and list(plan[0]) == [3, 700, 1999] and plan[1] is True
    positions, _ = catalogue.top(vector, 10, np.asarray([700]), allowed)
    assert list(positions) == list(exact(catalogue, vector, 10, np.asarray([700]), allowed))


def test_a_narrow_filter_ranks_as_exact_scoring_from_its_cached_rows_and_with_new_items(catalogue):
    rng = np.random.default_rng(11)
    vector = rng.standard_normal(RANK).astype(np.float32)
    with_new = replace(catalogue, new_ids=np.asarray(["n0", "n1"], dtype=object),
                       new_factors=3 * rng.standard_normal((2, RANK)).astype(np.float32),
                       new_positions={"n0": N_ITEMS, "n1": N_ITEMS + 1})
    allowed = np.zeros(with_new.size, dtype=bool)
    allowed[::10] = True  # 10% of the model's items and the second new item
    allowed[N_ITEMS + 1] = True
    blocked = np.sort(exact(with_new, vector, 3, np.empty(0, dtype=np.int64), allowed))
    want = list(exact(with_new, vector, 10, blocked, allowed))
    for _ in range(2):  # the second time from the filter's cached rows
        positions, scores = with_new.top(vector, 10, blocked, allowed)
        assert list(positions) == want
        assert np.allclose(scores, with_new.scores(vector)[positions])
    assert with_new.model.factor_blocks.cached_bytes > 0


def test_more_blocked_items_than_the_search_would_return_score_every_item(catalogue):
    vector = np.random.default_rng(12).standard_normal(RANK).astype(np.float32)
    blocked = np.arange(0, N_ITEMS, 2)  # a user who has seen half the catalogue
    assert catalogue.candidates(vector, 10, blocked, None) is None
    positions, _ = catalogue.top(vector, 10, blocked, None)
    assert list(positions) == list(exact(catalogue, vector, 10, blocked, None))
