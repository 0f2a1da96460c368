"""``lambdarec evaluate``'s split and metrics on inputs whose answers are worked out by hand."""

import math
from collections import Counter

import pyarrow as pa
import pytest

from deploy.evaluate import metrics_at_k, popularity_lists, split

pytestmark = pytest.mark.unit


def rows() -> pa.Table:
    users = ["a"] * 8 + ["b"] * 4 + ["c"]
    items = [f"i{n}" for n in range(8)] + ["i0", "i1", "i2", "i3"] + ["i0"]
    return pa.table({"user": users, "item": items, "rating": [5] * 13, "timestamp": list(range(100, 113))})


def test_the_random_split_holds_out_a_quarter_of_each_user_reproducibly():
    first, again = split(rows(), "random", 0.25, seed=3), split(rows(), "random", 0.25, seed=3)
    held = Counter(first.test.column("user").to_pylist())
    assert held == {"a": 2, "b": 1}  # round(8/4), round(4/4), round(1/4) = 0
    assert first.train.num_rows + first.test.num_rows == 13
    assert first.test.to_pylist() == again.test.to_pylist()
    assert split(rows(), "random", 0.25, seed=4).test.to_pylist() != first.test.to_pylist()


def test_the_time_split_holds_out_each_users_newest_rows():
    parts = split(rows(), "time", 0.25, seed=0)
    assert sorted(parts.test.column("item").to_pylist()) == ["i3", "i6", "i7"]  # a's two newest, b's newest


def test_metrics_match_a_hand_computed_ranking():
    figures = metrics_at_k({"u": ["x", "z", "y"]}, {"u": {"x", "y"}}, 3, Counter({"x": 4, "y": 2, "z": 1}), 4)
    dcg, idcg = 1 + 1 / math.log2(4), 1 + 1 / math.log2(3)
    assert figures["ndcg_at_3"] == pytest.approx(dcg / idcg)
    assert figures["precision_at_3"] == pytest.approx(2 / 3)
    assert figures["recall_at_3"] == pytest.approx(1.0)
    assert figures["map_at_3"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert figures["catalogue_coverage_at_3"] == pytest.approx(1.0)
    assert figures["novelty_at_3"] == pytest.approx((-math.log2(4 / 4) - math.log2(1 / 4) - math.log2(2 / 4)) / 3)


def test_a_user_with_no_answer_scores_zero_and_popularity_skips_seen_items():
    figures = metrics_at_k({}, {"u": {"x"}}, 2, Counter({"x": 1}), 1)
    assert figures["ndcg_at_2"] == 0.0 and figures["recall_at_2"] == 0.0
    train = pa.table({"user": ["a", "b", "b", "c"], "item": ["x", "x", "y", "z"], "rating": [4, 5, 3, 1]})
    lists, popularity = popularity_lists(train, ["a", "c"], 2)
    assert popularity == Counter({"x": 2, "y": 1, "z": 1})
    assert lists == {"a": ["y", "z"], "c": ["x", "y"]}
