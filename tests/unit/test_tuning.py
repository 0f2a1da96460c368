"""The hyperparameter search's bookkeeping, with a deterministic score in place of ALS fits."""

from __future__ import annotations

import pytest

from batch.engines import AlsParams
from batch.tuning import candidates, search

pytestmark = pytest.mark.unit

BASE = AlsParams(rank=8, regParam=0.1, alpha=1.0, maxIter=5, seed=3)
SPACE = {"rank": [8, 16], "alpha": [1.0, 10.0, 40.0]}


def test_grid_is_complete_and_random_is_a_seeded_sample_without_repeats():
    grid = candidates(SPACE, "grid", 100, seed=3)
    assert len(grid) == 6 and grid[0] == {"alpha": 1.0, "rank": 8}
    sample = candidates(SPACE, "random", 4, seed=3)
    assert len(sample) == 4 and len({tuple(sorted(c.items())) for c in sample}) == 4
    assert sample == candidates(SPACE, "random", 4, seed=3) != candidates(SPACE, "random", 4, seed=4)
    with pytest.raises(ValueError, match="cannot tune"):
        candidates({"seed": [1]}, "grid", 3, 0)


def test_the_best_validation_metric_wins_and_params_are_typed():
    result = search(lambda p: p.rank / 100 - abs(p.alpha - 10.0) / 1000, BASE, SPACE, "grid", 10)
    assert result["best"]["params"] == {"rank": 16, "regParam": 0.1, "alpha": 10.0, "maxIter": 5}
    assert len(result["trials"]) == 6 and isinstance(result["best"]["params"]["rank"], int)


def test_the_time_budget_stops_the_search_after_a_finished_trial():
    ticks = iter(range(100))
    result = search(lambda p: 0.0, BASE, SPACE, "grid", 10, budget_s=2.5, clock=lambda: next(ticks))
    assert len(result["trials"]) == 3  # checks at t=1 and t=2 let trials run; at t=3 the 2.5 s budget is spent
