"""``top_rows``, faiss's heap over a filter's rows, answers exactly what ``top_k`` over the full product does."""

from __future__ import annotations

import numpy as np
import pytest

from serving.views.catalogue import top_rows
from serving.foldin import top_k

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("integral", [True, False], ids=["many-ties", "real-valued"])
def test_top_rows_equals_top_k_over_every_score(integral):
    rng = np.random.default_rng(11)
    for trial in range(300):
        n, rank, k = int(rng.integers(1, 2000)), int(rng.integers(1, 16)), int(rng.integers(0, 40))
        # small integers make exact scores, so faiss's and numpy's sums agree and ties are common
        rows = (rng.integers(-2, 3, (n, rank)) if integral else rng.normal(size=(n, rank))).astype(np.float32)
        rows[rng.integers(0, n, 4)] = rows[0]  # duplicates of one row: ties at any rank
        if trial % 5 == 0:
            rows[rng.integers(0, n)] = np.nan
        vector = (rng.integers(-2, 3, rank) if integral else rng.normal(size=rank)).astype(np.float32)
        exclude = np.unique(rng.integers(0, n, int(rng.integers(0, 20))))

        best, scores = top_rows(rows, vector, k, exclude)

        full = rows @ vector
        expected = top_k(full, k, exclude)
        assert best.tolist() == expected.tolist(), trial
        np.testing.assert_allclose(scores, full[expected], rtol=1e-5, atol=1e-5)


def test_a_tie_at_the_cut_is_settled_by_position_beyond_the_heap():
    """Eight equal rows, two wanted, one excluded: the heap holds four of them, so the lowest positions
    must be found past it."""
    rows = np.zeros((1000, 4), dtype=np.float32)
    tied = np.array([990, 3, 500, 7, 999, 250, 640, 12])
    rows[tied] = [1.0, 0.0, 0.0, 0.0]
    best, scores = top_rows(rows, np.array([2.0, 0, 0, 0], dtype=np.float32), 2, np.array([3]))
    assert best.tolist() == [7, 12]
    assert scores.tolist() == [2.0, 2.0]
