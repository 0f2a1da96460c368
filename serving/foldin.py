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
import numpy.typing as npt
from scipy.linalg.lapack import dposv

from lambdarec.confidence import Confidence
from lambdarec.model_bundle import RegScaling

BOUND_BLOCKS_PER_K = 16  # top_k's blocks per wanted item: more, and its bound passes fewer values


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
    a = (y.T * c1) @ y
    a += yty
    a.flat[:: a.shape[0] + 1] += reg_param * scale  # the diagonal
    b = (1.0 + c1[positive]) @ y[positive]
    return a, b


def solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A^-1 b`` for a symmetric positive definite ``A``: LAPACK's Cholesky solve, called directly
    (scipy's ``cho_factor``/``cho_solve`` wrappers cost more than the solve on a request's 64 x 64)."""
    _, x, info = dposv(a, b)
    if info > 0:  # not positive definite: only without regularisation and with fewer items than factors
        return np.linalg.lstsq(a, b, rcond=None)[0]
    if info < 0:
        raise ValueError(f"dposv: argument {-info} is invalid")
    return x


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
    masked: npt.NDArray[np.floating] = np.array(scores, dtype=np.float32 if scores.dtype == np.float32 else np.float64)
    masked[~np.isfinite(masked)] = -np.inf
    if allowed is not None:
        masked[~allowed] = -np.inf
    if exclude is not None and len(exclude):
        masked[np.asarray(exclude, dtype=np.int64)] = -np.inf
    if k < len(masked):
        candidates = np.flatnonzero(masked >= _kth_bound(masked, k))
        if len(candidates) > k:  # ties at the k-th score are all kept, then ordered by position
            values = masked[candidates]
            candidates = candidates[values >= _kth_highest(values, k)]
    else:
        candidates = np.arange(len(masked))
    candidates = candidates[masked[candidates] > -np.inf]
    return candidates[np.lexsort((candidates, -masked[candidates]))][:k]


def _kth_bound(values: np.ndarray, k: int) -> float:
    """A value at most the ``k``-th highest of ``values``: the ``k``-th highest of the maxima of
    ``BOUND_BLOCKS_PER_K * k`` blocks (each of those maxima is a distinct value at least that high).

    One pass over ``values`` and a partition of a few hundred maxima, where partitioning every
    score cost more than scoring them; few values besides the top ``k`` pass the bound.
    """
    size = max(1, len(values) // (BOUND_BLOCKS_PER_K * k))
    maxima = np.maximum.reduceat(values, np.arange(0, len(values), size))
    return _kth_highest(maxima, k) if len(maxima) >= k else -np.inf


def _kth_highest(values: np.ndarray, k: int) -> float:
    return float(np.partition(values, len(values) - k)[len(values) - k])
