"""EASE on data whose right answer is known: two groups of items that never share a user."""

import numpy as np
import pytest
from scipy import sparse

from batch.ease import CatalogueTooLargeError, fit_ease

pytestmark = pytest.mark.unit


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
    model = fit_ease(users, items, np.ones(len(users)), l2=10.0)
    assert list(model.item_index) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]
    assert np.all(np.diag(model.weights) == 0)
    newcomer = sparse.csr_matrix(([1.0, 1.0], ([0, 0], [0, 2])), shape=(1, 16))  # items 0 and 2
    scores = model.scores(newcomer)[0]
    ranked = model.item_index[np.argsort(-scores)]
    assert set(ranked[:6]) == {0, 1, 2, 3, 4, 5}  # its own group first
    group_b = scores[model.item_index >= 10]
    assert np.allclose(group_b, 0.0, atol=1e-6)  # items no one shares with it score nothing


def test_weights_solve_the_ridge_regression():
    users, items = two_groups(np.random.default_rng(2))
    model = fit_ease(users, items, np.ones(len(users)), l2=5.0)
    x = sparse.csr_matrix((np.ones(len(users)), (users, np.searchsorted(model.item_index, items)))).toarray()
    x = np.minimum(x, 1)
    gram = x.T @ x
    # The stationarity condition of min ||X - XB||² + λ||B||² s.t. diag(B) = 0, off the diagonal:
    residual = gram @ model.weights - gram + 5.0 * model.weights
    off_diagonal = ~np.eye(len(model.item_index), dtype=bool)
    assert np.allclose(residual[off_diagonal], 0.0, atol=1e-3)


def test_a_catalogue_over_the_limit_is_refused_with_a_reason():
    users, items = two_groups(np.random.default_rng(3))
    with pytest.raises(CatalogueTooLargeError, match="12 items is more than EASE's limit of 10"):
        fit_ease(users, items, np.ones(len(users)), l2=1.0, max_items=10)
    with pytest.raises(ValueError, match="positive l2"):
        fit_ease(users, items, np.ones(len(users)), l2=0.0)
