"""EASE: a closed-form linear item-item model (Steck, "Embarrassingly Shallow Autoencoders", 2019).

A user's scores are their interaction row times an item-item weight matrix B,
``scores = x_u @ B``, with B the ridge regression of every item's column on all
the other items' columns and a zero diagonal (an item may not predict itself):

    P = (XᵀX + λI)⁻¹,   B = I - P · diag(1 / diag(P))

It has one hyperparameter (λ), no iterations and no randomness, and a user's
newest interactions score their neighbours at once (no fold-in solve): serving
only needs the user's row. The price is a dense items × items matrix, so it is
for catalogues that fit in memory (``max_items``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse


class CatalogueTooLargeError(ValueError):
    """EASE's items × items matrix would not fit the configured limit."""


@dataclass(frozen=True)
class ItemWeights:
    """B by item index: ``weights[i, j]`` is how much interacting with item i scores item j."""

    item_index: np.ndarray  # (n,) int: the item index of each row/column of ``weights``
    weights: np.ndarray  # (n, n) float32, zero diagonal

    def scores(self, interactions: sparse.csr_matrix) -> np.ndarray:
        """Scores over ``item_index`` order for rows of (users x all item indices) interactions."""
        return np.asarray(interactions[:, self.item_index] @ self.weights)


def fit_ease(
    users: np.ndarray, items: np.ndarray, values: np.ndarray, l2: float, max_items: int = 20_000
) -> ItemWeights:
    """Fit B on interaction rows (``values`` are the scaled confidences; zeros carry nothing)."""
    if l2 <= 0:
        raise ValueError(f"EASE needs a positive l2 regularisation, got {l2}")
    keep = values != 0
    users, items, values = users[keep], items[keep], values[keep].astype(np.float64)
    item_index = np.unique(items)
    if len(item_index) > max_items:
        raise CatalogueTooLargeError(
            f"{len(item_index)} items is more than EASE's limit of {max_items} "
            f"(a {len(item_index)}² float matrix); use an ALS engine for this catalogue"
        )
    columns = np.searchsorted(item_index, items)
    _, rows = np.unique(users, return_inverse=True)
    x = sparse.csr_matrix((values, (rows, columns)), shape=(int(rows.max()) + 1 if len(rows) else 0, len(item_index)))
    x.sum_duplicates()
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    weights = -precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return ItemWeights(item_index=item_index, weights=weights.astype(np.float32))
