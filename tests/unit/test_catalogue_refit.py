"""Folding new items in is bounded per refit, refolds only what changed, and never runs on a request."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lambdarec.lake import Lake
from serving.views import catalogue as catalogues
from serving.views.catalogue import CatalogueCache, Folded, build
from serving.foldin import fold_in_rows
from serving.views.model_store import ModelStore
from serving.views.speed.view import SpeedView
from tests.support.serving import speed_rows, wait_until, write_model

pytestmark = pytest.mark.unit

ITEMS = {**{f"a{n}": [1.0, 0.05 * n] for n in range(5)}, **{f"b{n}": [0.05 * n, 1.0] for n in range(5)}}
RATINGS = {"ua": {"a0": 3.0, "a1": 2.0}, "ub": {"b0": 4.0, "b1": 1.0}, "uc": {"a0": 1.0, "b0": 5.0}}


@pytest.fixture
def model(settings):
    lake = Lake(settings)
    write_model(lake, version=1, source_events_version=10, item_vectors=ITEMS, ratings=RATINGS)
    store = ModelStore(settings, lake)
    assert store.reload()
    return store.current


@pytest.fixture
def folds(monkeypatch):
    """The items fold-in computed a vector for since the test last emptied it (the real computation, counted)."""
    folded: list[str] = []
    real = Folded.put

    def counting(self, item, stamp, vector):
        folded.append(item)
        return real(self, item, stamp, vector)

    monkeypatch.setattr(Folded, "put", counting)
    return folded


def taken(folds: list[str]) -> list[str]:
    found = sorted(folds)
    folds.clear()
    return found


def test_a_refit_folds_at_most_its_limit_and_the_next_ones_fold_the_rest(model, settings, folds):
    view = SpeedView(settings)
    speed_rows(view, 11, [("ua", "n1", 8.0, "e1"), ("ub", "n2", 4.0, "e2"), ("uc", "n3", 2.0, "e3")])
    cache = CatalogueCache(limit=2)
    first = cache.get(model, view)
    assert len(first.new_ids) == 2 and first.waiting == 1 and not first.fresh(view)
    assert taken(folds) == sorted(first.new_ids)
    second = cache.get(model, view)  # the same generation, but one item waits: a refit is due
    assert list(second.new_ids) == ["n1", "n2", "n3"] and second.waiting == 0 and second.fresh(view)
    assert taken(folds) == sorted({"n1", "n2", "n3"} - set(first.new_ids))
    whole = build(model, view)  # no limit: everything at once, the same vectors
    assert np.allclose(second.new_factors, whole.new_factors) and np.allclose(second.yty, whole.yty)


def test_a_refit_refolds_only_the_items_whose_users_changed(model, settings, folds):
    view = SpeedView(settings)
    speed_rows(view, 11, [("ua", "n1", 8.0, "e1"), ("ub", "n2", 4.0, "e2")])
    cache = CatalogueCache(limit=10)
    before = cache.get(model, view)
    assert taken(folds) == ["n1", "n2"]
    speed_rows(view, 12, [("uc", "n2", 1.0, "e3")], batch_id=1)
    after = cache.get(model, view)
    assert taken(folds) == ["n2"]
    assert np.array_equal(after.new_factors[0], before.new_factors[0])  # n1: kept as folded
    assert not np.allclose(after.new_factors[1], before.new_factors[1])  # n2: uc's taste now counts
    assert cache.get(model, view) is after and folds == []  # nothing changed: no refit


def test_never_folded_items_go_before_refolds(model, settings):
    view = SpeedView(settings)
    speed_rows(view, 11, [("ua", "n1", 8.0, "e1")])
    cache = CatalogueCache(limit=1)
    cache.get(model, view)
    speed_rows(view, 12, [("ub", "n1", 1.0, "e2"), ("ub", "n2", 4.0, "e3")], batch_id=1)  # n1 changed, n2 is new
    assert list(cache.get(model, view).new_ids) == ["n1", "n2"]  # n2 folded; n1 kept its first vector meanwhile
    assert cache.get(model, view).waiting == 0


def test_an_item_is_folded_from_its_most_recent_users_only(model, settings, monkeypatch):
    monkeypatch.setattr(catalogues, "FOLDIN_USERS_PER_ITEM", 2)
    view = SpeedView(settings)
    speed_rows(view, 11, [("ua", "n1", 8.0, "e1"), ("ub", "n1", 4.0, "e2"), ("uc", "n1", 2.0, "e3")])
    folded = build(model, view)
    users = np.asarray([model.user_factors[model.user_positions[u]] for u in ("uc", "ub")])
    expected = fold_in_rows(model.xtx, users, np.asarray([2.0, 4.0]), model.reg_param, model.confidence,
                            model.reg_scaling)
    assert np.allclose(folded.new_factors[0], expected, atol=1e-5)


def test_items_that_left_the_view_leave_the_catalogue(model, settings):
    view = SpeedView(settings.model_copy(update={"speed_view_max_items": 1}))
    speed_rows(view, 11, [("ua", "n1", 8.0, "e1")])
    state = Folded()
    assert list(build(model, view, folded=state).new_ids) == ["n1"]
    speed_rows(view, 12, [("ub", "n2", 4.0, "e2")], batch_id=1)  # the item cap evicts n1
    assert list(build(model, view, folded=state).new_ids) == ["n2"] and set(state.stamps) == {"n2"}


def test_requests_take_the_last_catalogue_at_once_and_the_refit_runs_in_the_background(model, settings, monkeypatch):
    view = SpeedView(settings)
    cache = CatalogueCache(limit=10, interval_s=0.01)
    assert cache.current(model, view).size == len(model.item_ids)  # no catalogue yet: the model's items alone
    speed_rows(view, 11, [("ua", "n1", 8.0, "e1")])
    on_request = threading.current_thread()
    real = catalogues.build

    def off_the_request(*args, **kwargs):
        assert threading.current_thread() is not on_request, "a request built a catalogue"
        return real(*args, **kwargs)

    monkeypatch.setattr(catalogues, "build", off_the_request)
    stale = cache.current(model, view)
    assert list(stale.new_ids) == []  # answered at once, before any fold-in
    cache.start(lambda: model, view)
    try:
        refitted = wait_until(lambda: (c := cache.current(model, view)).fresh(view) and c, "the background refit")
        assert list(refitted.new_ids) == ["n1"]
        speed_rows(view, 12, [("ub", "n2", 4.0, "e2")], batch_id=1)
        cache.current(model, view)  # a request sees the view moved on, and asks for a refit
        wait_until(lambda: list(cache.current(model, view).new_ids) == ["n1", "n2"], "the next refit")
    finally:
        cache.stop()


def test_a_request_never_waits_for_a_refit_in_progress(model, settings):
    view = SpeedView(settings)
    cache = CatalogueCache(limit=10)
    first = cache.get(model, view)
    speed_rows(view, 11, [("ua", "n1", 8.0, "e1")])
    paused, release = threading.Event(), threading.Event()

    def pause() -> None:
        paused.set()
        release.wait(30)

    refit = threading.Thread(target=cache.get, args=(model, view, pause), daemon=True)
    refit.start()
    try:
        assert paused.wait(10)
        assert cache.current(model, view) is first  # the refit holds its build lock; the request does not wait
    finally:
        release.set()
        refit.join(10)
    assert list(cache.current(model, view).new_ids) == ["n1"]
