"""Ranking metrics, checked against figures worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batch.evaluate import Holdout, compare_to_popularity, factor_scorer, popularity_scorer, ranking_metrics

pytestmark = pytest.mark.unit


def fixed(scores: list[list[float]]):
    table = np.array(scores, dtype=float)
    return lambda users: table[users]


@pytest.fixture
def holdout() -> Holdout:
    # 3 users x 5 items. User 0 trained on item 0 and holds out items 1 and 3;
    # user 1 holds out item 4 and one item the model never saw (-1); user 2 holds out nothing.
    return Holdout.from_pairs(
        n_users=3,
        n_items=5,
        train_users=[0, 1, 2, 2],
        train_items=[0, 1, 0, 2],
        test_users=[0, 0, 1, 1],
        test_items=[1, 3, 4, -1],
    )


def test_hand_worked_recall_precision_ndcg(holdout):
    scores = fixed(
        [
            [9.0, 5.0, 4.0, 1.0, 0.0],  # item 0 is excluded (trained); top-2 = 1, 2: one hit at rank 1
            [0.0, 9.0, 3.0, 2.0, 1.0],  # item 1 excluded; top-2 = 2, 3: no hit
            [1.0, 1.0, 1.0, 1.0, 1.0],  # no held-out items: not evaluated
        ]
    )
    metrics = ranking_metrics(scores, holdout, k=2)
    assert metrics["n_eval_users"] == 2
    assert metrics["recall_at_2"] == pytest.approx((1 / 2 + 0 / 2) / 2)
    assert metrics["precision_at_2"] == pytest.approx((1 / 2 + 0) / 2)
    ideal_user0 = 1 + 1 / math.log2(3)
    assert metrics["ndcg_at_2"] == pytest.approx((1 / ideal_user0 + 0) / 2)


def test_unknown_items_count_against_recall(holdout):
    perfect = fixed([[0, 9, 0, 8, 0], [0, 0, 0, 0, 9], [0, 0, 0, 0, 0]])
    metrics = ranking_metrics(perfect, holdout, k=2)
    # user 0 gets both; user 1 gets item 4 but can never get the unknown item
    assert metrics["recall_at_2"] == pytest.approx((1.0 + 0.5) / 2)


def test_training_items_are_never_recommended_back(holdout):
    only_seen = fixed([[100, 0, 0, 0, 0], [0, 100, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert ranking_metrics(only_seen, holdout, k=5)["recall_at_5"] == pytest.approx((1.0 + 0.5) / 2)


def test_popularity_counts_training_users_per_item(holdout):
    assert popularity_scorer(holdout.train)(np.array([0])).tolist() == [[2.0, 1.0, 1.0, 0.0, 0.0]]


def test_compare_prefixes_both_sides(holdout):
    factors = np.eye(5)[:3]
    metrics = compare_to_popularity(factor_scorer(factors, np.eye(5)), holdout, k=10)
    assert {"model_recall_at_10", "popularity_recall_at_10", "model_ndcg_at_10", "n_eval_users"} <= set(metrics)


def test_empty_holdout_is_an_error():
    empty = Holdout.from_pairs(2, 3, [0], [0], [], [])
    with pytest.raises(ValueError, match="holdout is empty"):
        ranking_metrics(fixed([[0, 0, 0], [0, 0, 0]]), empty)


def test_hand_worked_map_and_catalogue_coverage(holdout):
    scores = fixed(
        [
            [9.0, 1.0, 4.0, 5.0, 0.0],  # top-3 after excluding item 0: 3 (hit), 2, 1 (hit)
            [0.0, 9.0, 3.0, 2.0, 1.0],  # top-3 after excluding item 1: 2, 3, 4 (hit at rank 3)
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    metrics = ranking_metrics(scores, holdout, k=3)
    ap_user0 = (1 / 1 + 2 / 3) / 2  # hits at ranks 1 and 3, two relevant items
    ap_user1 = (1 / 3) / 2  # hit at rank 3, two relevant (one the model never saw)
    assert metrics["map_at_3"] == pytest.approx((ap_user0 + ap_user1) / 2)
    # items 1, 2, 3 and 4 were shown, out of a catalogue of 5 (user 2 has no holdout: not scored)
    assert metrics["catalogue_coverage_at_3"] == pytest.approx(4 / 5)
