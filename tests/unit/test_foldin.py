"""Fold-in solves Spark's implicit-ALS user step; top-k ranks and excludes.

The Spark-trained comparison (the stored vector is reproduced) is in
tests/spark/test_serving_foldin.py.
"""

import numpy as np
import pytest

from lambdarec.model_bundle import gram
from serving.foldin import fold_in, top_k
from lambdarec.confidence import Confidence

pytestmark = pytest.mark.unit


def implicit_loss_gradient(x, y, ratings, reg, alpha):
    """Gradient of Spark's implicit loss for one user, written from the loss itself:
    sum_i c_i (p_i - x.y_i)^2 + reg * n_u * |x|^2 over ALL items, c_i = 1 + alpha|r_i|,
    p_i = [r_i > 0]."""
    c = 1.0 + alpha * np.abs(ratings)
    p = (ratings > 0).astype(float)
    residual = y @ x - p
    return 2 * (y.T @ (c * residual)) + 2 * reg * (ratings > 0).sum() * x


def test_solution_minimises_the_implicit_als_loss():
    rng = np.random.default_rng(7)
    y = rng.normal(size=(12, 4))
    ratings = np.zeros(12)
    ratings[[1, 4, 5, 9]] = [1.0, 3.0, 0.5, 8.0]
    positions = np.flatnonzero(ratings)
    x = fold_in(y, gram(y), positions, ratings[positions], reg_param=0.3, confidence=Confidence("linear", 2.0))
    assert np.abs(implicit_loss_gradient(x, y, ratings, 0.3, 2.0)).max() < 1e-9


def test_negative_ratings_add_confidence_but_no_preference():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(8, 3))
    ratings = np.zeros(8)
    ratings[[0, 2, 3]] = [2.0, -1.5, 1.0]
    positions = np.flatnonzero(ratings)
    x = fold_in(y, gram(y), positions, ratings[positions], reg_param=0.2, confidence=Confidence("linear", 4.0))
    grad = implicit_loss_gradient(x, y, ratings, 0.2, 4.0)
    assert np.abs(grad).max() < 1e-9


def test_a_user_with_no_positive_rating_gets_the_zero_vector():
    y = np.eye(3)
    x = fold_in(y, gram(y), np.array([0]), np.array([-2.0]), 0.1, Confidence("linear", 1.0))
    assert np.array_equal(x, np.zeros(3))


def test_folded_in_user_prefers_items_like_the_ones_they_used():
    y = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.0], [0.0, 1.0], [0.1, 0.9]])
    x = fold_in(y, gram(y), np.array([0, 1]), np.array([3.0, 2.0]), 0.1, Confidence("linear", 5.0))
    scores = y @ x
    assert list(top_k(scores, 2, exclude=np.array([0, 1]))) == [2, 4]


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        fold_in(np.eye(2), np.eye(2), np.array([0, 1]), np.array([1.0]), 0.1, Confidence("linear", 1.0))


def test_top_k_orders_excludes_and_breaks_ties_by_position():
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.7])
    assert list(top_k(scores, 3)) == [1, 2, 4]
    assert list(top_k(scores, 3, exclude=np.array([1, 4]))) == [2, 0, 3]
    assert list(top_k(scores, 10, exclude=np.array([0, 1, 2]))) == [4, 3]
    assert list(top_k(scores, 0)) == []


def test_top_k_equals_a_full_sort_on_ties_and_non_finite_scores():
    """The bound top_k uses to skip most scores never loses one: checked against sorting them all."""
    rng = np.random.default_rng(5)
    for trial in range(400):
        n, k = int(rng.integers(1, 3000)), int(rng.integers(1, 40))
        scores = (rng.integers(-3, 3, n) if trial % 2 else rng.normal(size=n)).astype(np.float32)  # many ties
        scores[rng.integers(0, n, 3)] = [np.nan, np.inf, -np.inf]
        exclude = rng.integers(0, n, int(rng.integers(0, 20)))
        allowed = rng.random(n) > 0.5 if trial % 3 == 0 else None
        masked = np.where(np.isfinite(scores), scores, -np.inf)
        masked[exclude] = -np.inf
        if allowed is not None:
            masked[~allowed] = -np.inf
        order = np.lexsort((np.arange(n), -masked))
        expected = [int(p) for p in order if masked[p] > -np.inf][:k]
        assert list(top_k(scores, k, exclude, allowed)) == expected, trial
