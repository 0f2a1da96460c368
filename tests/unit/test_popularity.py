"""One popularity: the publish gate's baseline is the ranking serving serves as ``popular``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from batch.evaluate import Holdout, compare_to_popularity, factor_scorer, popularity_scorer
from lambdarec.lake import Lake
from lambdarec.popularity import item_popularity
from serving.views.item_attributes import ItemAttributes
from serving.views.model_store import ModelStore
from serving.views.catalogue import build
from serving.recommend import Query, recommend
from serving.views.speed.view import SpeedView
from tests.support.serving import write_model

pytestmark = pytest.mark.unit

ITEMS = {"a0": [1.0, 0.0], "a1": [0.9, 0.1], "b0": [0.0, 1.0], "b1": [0.1, 0.9]}
# One heavy user on a0; three light users on b0; a dislike (negative weight) on b1.
RATINGS = {
    "heavy": {"a0": 50.0},
    "u1": {"b0": 1.0},
    "u2": {"b0": 1.0, "a1": 2.0},
    "u3": {"b0": 1.0, "b1": -2.0},
}


def test_popularity_counts_users_with_a_positive_weight():
    users = np.array([0, 0, 1, 2, 2, 3])
    items = np.array([0, 0, 1, 1, 2, 2])
    weights = np.array([5.0, 1.0, 1.0, 1.0, -2.0, 0.5])
    counts = item_popularity(sparse.coo_matrix((weights, (users, items)), shape=(4, 4)))
    # item 0: one user however heavy; item 1: two users; item 2: the dislike does not count
    assert counts.tolist() == [1.0, 2.0, 1.0, 0.0]
    assert counts.dtype == np.float64


def test_served_popular_ranking_is_the_gates_baseline(settings):
    lake = Lake(settings)
    write_model(lake, version=1, source_events_version=1, item_vectors=ITEMS, ratings=RATINGS)
    store = ModelStore(settings, lake)
    assert store.reload() is True
    model = store.current

    # The gate's baseline over the same training pairs, in the model's item positions.
    user_ids = sorted(RATINGS)
    pairs = [(user_ids.index(u), model.item_positions[i], w) for u in user_ids for i, w in RATINGS[u].items()]
    users, items, weights = (np.array(column) for column in zip(*pairs, strict=True))
    holdout = Holdout.from_pairs(len(user_ids), len(ITEMS), users, items, users[:1], items[:1], weights)
    baseline = popularity_scorer(holdout.weights)(np.array([0]))[0]
    assert np.array_equal(model.popularity, baseline)

    view = SpeedView(settings)
    served = recommend(build(model, view), view, ItemAttributes(lake), "stranger", Query(k=3))
    assert served.strategy == "popular"
    assert [(s.item_id, s.score) for s in served.items] == [("b0", 3.0), ("a0", 1.0), ("a1", 1.0)]


def test_baseline_without_weights_counts_every_training_pair():
    holdout = Holdout.from_pairs(3, 3, [0, 1, 2], [0, 0, 1], [0], [2])
    metrics = compare_to_popularity(factor_scorer(np.eye(3), np.eye(3)), holdout, k=2)
    assert "popularity_recall_at_2" in metrics
    assert popularity_scorer(holdout.train)(np.array([0]))[0].tolist() == [2.0, 1.0, 0.0]
