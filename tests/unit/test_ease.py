"""EASE on data whose right answer is known: two groups of items that never share a user."""

import numpy as np
import pytest
from scipy import sparse

from batch.ease import CatalogueTooLargeError, EaseParams, fit_ease

pytestmark = pytest.mark.unit

BINARY = EaseParams(l2=10.0, scaling="binary")


def two_groups(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Users 0-29 touch items 0-5 (the even ones more), users 30-59 touch items 10-15; item 9 no one."""
    users, items = [], []
    for user in range(60):
        base = 0 if user < 30 else 10
        chosen = rng.choice(6, size=4, replace=False, p=[0.25, 0.1, 0.25, 0.1, 0.2, 0.1])
        users += [user] * 4
        items += [base + int(i) for i in chosen]
    return np.array(users), np.array(items)


def test_a_users_items_score_their_own_group_only():
    users, items = two_groups(np.random.default_rng(1))
    model = fit_ease(users, items, np.ones(len(users)), BINARY)
    assert list(model.item_index) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]
    assert np.all(model.weights.diagonal() == 0)
    newcomer = sparse.csr_matrix(([1.0, 1.0], ([0, 0], [0, 2])), shape=(1, 16))  # items 0 and 2
    scores = (newcomer @ model.by_index(16)).toarray()[0]
    assert set(np.argsort(-scores)[:4]) == {1, 3, 4, 5}  # the rest of its own group first
    assert np.allclose(scores[10:], 0.0, atol=1e-6)  # items no one shares with it score nothing


def test_weights_solve_the_ridge_regression():
    users, items = two_groups(np.random.default_rng(2))
    model = fit_ease(users, items, np.ones(len(users)), EaseParams(l2=5.0, scaling="binary"))
    x = sparse.csr_matrix((np.ones(len(users)), (users, np.searchsorted(model.item_index, items)))).toarray()
    x = np.minimum(x, 1)
    gram, b = x.T @ x, model.weights.toarray()
    # The stationarity condition of min ||X - XB||² + λ||B||² s.t. diag(B) = 0, off the diagonal:
    residual = gram @ b - gram + 5.0 * b
    off_diagonal = ~np.eye(len(model.item_index), dtype=bool)
    assert np.allclose(residual[off_diagonal], 0.0, atol=1e-3)


def test_only_the_strongest_neighbours_are_kept():
    users, items = two_groups(np.random.default_rng(2))
    full = fit_ease(users, items, np.ones(len(users)), EaseParams(l2=5.0, scaling="binary")).weights.toarray()
    pruned = fit_ease(users, items, np.ones(len(users)), EaseParams(l2=5.0, scaling="binary", neighbours=2))
    kept = pruned.weights.toarray()
    assert (np.count_nonzero(kept, axis=1) <= 2).all()
    for row in range(len(full)):
        strongest = np.sort(np.abs(full[row]))[-2:]
        assert np.allclose(np.sort(np.abs(kept[row][kept[row] != 0])), strongest[strongest > 0])
        assert np.allclose(kept[row][kept[row] != 0], full[row][kept[row] != 0])  # kept weights are unchanged


def test_the_penalty_does_not_depend_on_alpha_and_dislikes_teach_nothing():
    users, items = two_groups(np.random.default_rng(4))
    ratings = np.random.default_rng(5).integers(1, 6, len(users)).astype(float)
    low = fit_ease(users, items, ratings, EaseParams(l2=50.0, scaling="log", alpha=1.0)).weights.toarray()
    high = fit_ease(users, items, ratings, EaseParams(l2=50.0, scaling="log", alpha=40.0)).weights.toarray()
    assert np.allclose(low, high, atol=1e-5)
    linear = fit_ease(users, items, ratings, EaseParams(l2=50.0, scaling="linear")).weights.toarray()
    assert not np.allclose(low, linear, atol=1e-3)  # the scaling changes what is learnt
    disliked = ratings.copy()
    disliked[users == 0] = -1.0  # user 0 dislikes everything: like not having them
    keep = users != 0
    without = fit_ease(users[keep], items[keep], ratings[keep], EaseParams(l2=50.0, scaling="log"))
    with_dislikes = fit_ease(users, items, disliked, EaseParams(l2=50.0, scaling="log"))
    assert np.allclose(without.weights.toarray(), with_dislikes.weights.toarray(), atol=1e-6)


def test_a_catalogue_over_the_limit_is_refused_with_a_reason():
    users, items = two_groups(np.random.default_rng(3))
    with pytest.raises(CatalogueTooLargeError, match="12 items is more than EASE's limit of 10"):
        fit_ease(users, items, np.ones(len(users)), BINARY, max_items=10)
    with pytest.raises(ValueError, match="positive l2"):
        fit_ease(users, items, np.ones(len(users)), EaseParams(l2=0.0))
