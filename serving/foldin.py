"""ALS fold-in and scoring in numpy.

Fold-in solves the implicit-ALS user step exactly as Spark ALS does
(``ALS.computeFactors`` with ``implicitPrefs``), so folding in a training user
against the final item factors reproduces Spark's stored user vector:

    c1_i = alpha * |r_ui|
    A    = YtY + sum_i c1_i * y_i y_i^T + regParam * n_u * I,   n_u = #{i : r_ui > 0}
    b    = sum_{i : r_ui > 0} (1 + c1_i) * y_i
    x_u  = A^-1 b
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve


def gram(item_factors: np.ndarray) -> np.ndarray:
    """YtY in float64, computed once per model."""
    y = np.asarray(item_factors, dtype=np.float64)
    return y.T @ y


def fold_in(
    item_factors: np.ndarray,
    yty: np.ndarray,
    item_positions: np.ndarray,
    ratings: np.ndarray,
    reg_param: float,
    alpha: float,
) -> np.ndarray:
    """The user vector that best explains ``ratings`` on ``item_positions`` given fixed items."""
    positions = np.asarray(item_positions, dtype=np.int64)
    r = np.asarray(ratings, dtype=np.float64)
    if positions.shape != r.shape:
        raise ValueError("item_positions and ratings must have the same length")
    rank = yty.shape[0]
    positive = r > 0
    n_u = int(positive.sum())
    if n_u == 0:
        return np.zeros(rank, dtype=np.float64)
    y = np.asarray(item_factors[positions], dtype=np.float64)
    c1 = alpha * np.abs(r)
    a = yty + (y.T * c1) @ y + reg_param * n_u * np.eye(rank)
    b = (1.0 + c1[positive]) @ y[positive]
    try:
        return cho_solve(cho_factor(a), b)
    except LinAlgError:  # only without regularisation and with fewer items than factors
        return np.linalg.lstsq(a, b, rcond=None)[0]


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first, never one in ``exclude``."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    masked = np.asarray(scores, dtype=np.float64).copy()
    if exclude is not None and len(exclude):
        masked[np.asarray(exclude, dtype=np.int64)] = -np.inf
    candidates = np.flatnonzero(np.isfinite(masked))
    if len(candidates) > k:
        part = np.argpartition(-masked[candidates], k - 1)[:k]
        candidates = candidates[part]
    return candidates[np.lexsort((candidates, -masked[candidates]))]
