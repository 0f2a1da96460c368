"""ALS fold-in, explanations and top-k in numpy.

Fold-in solves the implicit-ALS user step exactly as Spark ALS does
(``ALS.computeFactors`` with ``implicitPrefs``), so folding in a training user
against the final item factors reproduces Spark's stored user vector:

    c1_i = c(r_ui) - 1            (lambdarec.confidence: alpha * s(|r_ui|))
    A    = YtY + sum_i c1_i * y_i y_i^T + regParam * n_u * I,   n_u = #{i : r_ui > 0}
    b    = sum_{i : r_ui > 0} (1 + c1_i) * y_i
    x_u  = A^-1 b

The same equations with users and items swapped give a new item's vector from
the users who interacted with it (the symmetric fold-in). An engine that does not
scale regularisation by the interaction count (``implicit``) uses
``reg_scaling="constant"``: ``regParam * I``. The Gram matrices ``YtY`` and ``XtX``
come with the model bundle (``lambdarec.model_bundle.gram``).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from lambdarec.confidence import Confidence
from lambdarec.model_bundle import RegScaling


def normal_equations(
    yty: np.ndarray,
    rated: np.ndarray,
    ratings: np.ndarray,
    reg_param: float,
    confidence: Confidence,
    reg_scaling: RegScaling = "per_interaction",
) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) of one row's implicit-ALS least-squares problem over its ``rated`` vectors."""
    y = np.asarray(rated, dtype=np.float64)
    r = np.asarray(ratings, dtype=np.float64)
    if y.shape[0] != r.shape[0]:
        raise ValueError("rated vectors and ratings must have the same length")
    positive = r > 0
    c1 = confidence.extra(r)
    scale = int(positive.sum()) if reg_scaling == "per_interaction" else 1
    a = yty + (y.T * c1) @ y + reg_param * scale * np.eye(yty.shape[0])
    b = (1.0 + c1[positive]) @ y[positive]
    return a, b


def solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return cho_solve(cho_factor(a), b)
    except LinAlgError:  # only without regularisation and with fewer items than factors
        return np.linalg.lstsq(a, b, rcond=None)[0]


def fold_in_rows(
    yty: np.ndarray,
    rated: np.ndarray,
    ratings: np.ndarray,
    reg_param: float,
    confidence: Confidence,
    reg_scaling: RegScaling = "per_interaction",
) -> np.ndarray:
    """The vector that best explains ``ratings`` on the fixed ``rated`` vectors (zero if none positive)."""
    if not (np.asarray(ratings) > 0).any():
        return np.zeros(yty.shape[0], dtype=np.float64)
    return solve(*normal_equations(yty, rated, ratings, reg_param, confidence, reg_scaling))


def fold_in(
    item_factors: np.ndarray,
    yty: np.ndarray,
    item_positions: np.ndarray,
    ratings: np.ndarray,
    reg_param: float,
    confidence: Confidence,
    reg_scaling: RegScaling = "per_interaction",
) -> np.ndarray:
    """The user vector that best explains ``ratings`` on ``item_positions`` given fixed items."""
    positions = np.asarray(item_positions, dtype=np.int64)
    if positions.shape != np.shape(ratings):
        raise ValueError("item_positions and ratings must have the same length")
    return fold_in_rows(yty, item_factors[positions], ratings, reg_param, confidence, reg_scaling)


def contributions(
    a: np.ndarray, rated: np.ndarray, ratings: np.ndarray, confidence: Confidence, candidates: np.ndarray
) -> np.ndarray:
    """How much each rated item adds to each candidate's score (candidates x rated).

    With ``x = A^-1 b`` a candidate's score ``y_c.x`` is exactly the sum over rated
    items j of ``(y_c A^-1 y_j) (1 + c1_j)`` for positive ratings, so a row sums to
    the score: the "because you ..." of Hu, Koren and Volinsky (2008).
    """
    r = np.asarray(ratings, dtype=np.float64)
    weight = np.where(r > 0, 1.0 + confidence.extra(r), 0.0)
    similarity = np.asarray(candidates, dtype=np.float64) @ solve(a, np.asarray(rated, dtype=np.float64).T)
    return similarity * weight


def top_k(
    scores: np.ndarray, k: int, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Positions of the ``k`` highest finite scores, best first, never one in ``exclude``.

    ``allowed`` (a boolean mask) restricts the candidates; ties are broken by
    position. ``scores`` is not modified.
    """
    if k <= 0 or len(scores) == 0:
        return np.empty(0, dtype=np.int64)
    masked = np.array(scores, dtype=np.float32 if scores.dtype == np.float32 else np.float64)
    if allowed is not None:
        masked[~allowed] = -np.inf
    if exclude is not None and len(exclude):
        masked[np.asarray(exclude, dtype=np.int64)] = -np.inf
    if k < len(masked):
        candidates = np.argpartition(np.negative(masked), k - 1)[:k]
        # ties at the cut: take every position scoring the k-th value, then order
        cut = masked[candidates].min()
        candidates = np.union1d(candidates, np.flatnonzero(masked == cut)) if np.isfinite(cut) else candidates
    else:
        candidates = np.arange(len(masked))
    candidates = candidates[np.isfinite(masked[candidates])]
    return candidates[np.lexsort((candidates, -masked[candidates]))][:k]
