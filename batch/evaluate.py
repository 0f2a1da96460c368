"""Offline ranking metrics on a time-based holdout, for a model and a popularity baseline.

Scoring is plain numpy over collected factors: models here have at most a few
hundred thousand rows of rank-32 floats, and numpy keeps the metric code short
enough to check by eye. Both scorers see the same users, the same excluded
training items and the same relevant sets, so their figures are comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from lambdarec.popularity import item_popularity

Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Holdout:
    """What a model is judged on.

    ``train``: (users x items) training interactions; never recommended back.
    ``weights``: the same interactions' summed training weights, when known: the
    popularity baseline counts only users with a positive weight, as serving does.
    ``truth``: (users x items) held-out pairs whose item the model knows.
    ``n_relevant``: held-out items per user, counting items the model never saw
    (they cannot be hit, but hiding them would flatter recall).
    """

    train: sparse.csr_matrix
    truth: sparse.csr_matrix
    n_relevant: np.ndarray
    weights: sparse.csr_matrix | None = None

    @classmethod
    def from_pairs(
        cls,
        n_users: int,
        n_items: int,
        train_users: np.ndarray,
        train_items: np.ndarray,
        test_users: np.ndarray,
        test_items: np.ndarray,
        train_weights: np.ndarray | None = None,
    ) -> "Holdout":
        """Build from index arrays; a test item index of -1 means "unknown to the model".

        ``train_weights``: each training pair's weight (the interactions' ``rating``);
        without them every training pair counts as a positive interaction.
        """
        train_users, train_items, test_users, test_items = (
            np.asarray(a, dtype=np.int64) for a in (train_users, train_items, test_users, test_items)
        )
        train = sparse.csr_matrix(
            (np.ones(len(train_users)), (train_users, train_items)), shape=(n_users, n_items)
        )
        known = test_items >= 0
        truth = sparse.csr_matrix(
            (np.ones(int(known.sum())), (test_users[known], test_items[known])), shape=(n_users, n_items)
        )
        truth.data[:] = 1.0  # duplicate pairs would have summed
        n_relevant = np.bincount(test_users, minlength=n_users)
        weights = None
        if train_weights is not None:
            weights = sparse.csr_matrix(
                (np.asarray(train_weights, dtype=np.float64), (train_users, train_items)), shape=(n_users, n_items)
            )
        return cls(train=train, truth=truth, n_relevant=n_relevant, weights=weights)

    @property
    def users(self) -> np.ndarray:
        """Users with at least one held-out item: the ones metrics average over."""
        return np.flatnonzero(self.n_relevant > 0)


def factor_scorer(user_factors: np.ndarray, item_factors: np.ndarray) -> Scorer:
    """Scores as dot products of latent factors, as ALS predicts them."""
    return lambda users: user_factors[users] @ item_factors.T


def popularity_scorer(train: sparse.csr_matrix) -> Scorer:
    """Every user gets the same ranking: ``lambdarec.popularity.item_popularity``, what serving serves."""
    counts = item_popularity(train)
    return lambda users: np.tile(counts, (len(users), 1))


def ranking_metrics(score: Scorer, holdout: Holdout, k: int = 10, batch_size: int = 512) -> dict[str, float]:
    """Mean recall, precision, nDCG and MAP at k over holdout users, training items excluded.

    ``catalogue_coverage_at_k``: the share of the catalogue (the holdout's item
    columns) that appears in at least one evaluated user's top k.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    users = holdout.users
    n_items = holdout.train.shape[1]
    if len(users) == 0 or n_items == 0:
        raise ValueError("the holdout is empty: no user has a held-out item to evaluate on")
    top = min(k, n_items)
    discounts = 1.0 / np.log2(np.arange(2, top + 2))
    recall = precision = ndcg = average_precision = 0.0
    shown = np.zeros(n_items, dtype=bool)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = np.array(score(batch), dtype=np.float64)
        seen_rows, seen_cols = holdout.train[batch].nonzero()
        scores[seen_rows, seen_cols] = -np.inf
        candidates = np.argpartition(-scores, top - 1, axis=1)[:, :top]
        order = np.argsort(-np.take_along_axis(scores, candidates, axis=1), axis=1, kind="stable")
        ranked = np.take_along_axis(candidates, order, axis=1)
        shown[ranked[np.isfinite(np.take_along_axis(scores, ranked, axis=1))]] = True
        hits = np.take_along_axis(holdout.truth[batch].toarray() > 0, ranked, axis=1)
        relevant = holdout.n_relevant[batch]
        ideal = np.cumsum(discounts)[np.minimum(relevant, top) - 1]
        precision_at = np.cumsum(hits, axis=1) / np.arange(1, top + 1)
        recall += float((hits.sum(axis=1) / relevant).sum())
        precision += float((hits.sum(axis=1) / k).sum())
        ndcg += float(((hits * discounts).sum(axis=1) / ideal).sum())
        average_precision += float(((precision_at * hits).sum(axis=1) / np.minimum(relevant, k)).sum())
    n = len(users)
    return {
        f"recall_at_{k}": recall / n,
        f"precision_at_{k}": precision / n,
        f"ndcg_at_{k}": ndcg / n,
        f"map_at_{k}": average_precision / n,
        f"catalogue_coverage_at_{k}": float(shown.sum()) / n_items,
        "n_eval_users": n,
    }


def compare_to_popularity(score: Scorer, holdout: Holdout, k: int = 10) -> dict[str, float]:
    """The model's and the popularity baseline's metrics on the same split, prefixed."""
    model = ranking_metrics(score, holdout, k)
    weights = holdout.weights if holdout.weights is not None else holdout.train
    baseline = ranking_metrics(popularity_scorer(weights), holdout, k)
    n_eval_users = model.pop("n_eval_users")
    baseline.pop("n_eval_users")
    metrics = {f"model_{name}": value for name, value in model.items()}
    metrics.update({f"popularity_{name}": value for name, value in baseline.items()})
    return {**metrics, "n_eval_users": n_eval_users}
