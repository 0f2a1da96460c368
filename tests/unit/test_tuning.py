"""The hyperparameter search's bookkeeping, with a deterministic score in place of ALS fits."""

from __future__ import annotations

import pytest

from batch.engines import AlsParams
from batch.tuning import candidates, search

pytestmark = pytest.mark.unit

BASE = AlsParams(rank=8, reg=0.1, alpha=1.0, iterations=5, seed=3)
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
    assert result["best"]["params"] == {"rank": 16, "reg": 0.1, "alpha": 10.0, "iterations": 5}
    assert len(result["trials"]) == 6 and isinstance(result["best"]["params"]["rank"], int)


def test_the_time_budget_stops_the_search_after_a_finished_trial():
    ticks = iter(range(100))
    result = search(lambda p: 0.0, BASE, SPACE, "grid", 10, budget_s=2.5, clock=lambda: next(ticks))
    assert len(result["trials"]) == 3  # checks at t=1 and t=2 let trials run; at t=3 the 2.5 s budget is spent


def test_one_vocabulary_for_als_parameters():
    from dataclasses import fields

    from lambdarec.settings import ALS_PARAMS, Settings

    assert tuple(f.name for f in fields(AlsParams))[: len(ALS_PARAMS)] == ALS_PARAMS
    assert all(hasattr(Settings(), f"als_{name}") for name in ALS_PARAMS)
    assert set(Settings().tune_space) <= set(ALS_PARAMS)
    # a tune space written with Spark ML's names still reads, in the one vocabulary
    legacy = Settings(tune_space={"regParam": [0.1], "maxIter": [3]})
    assert legacy.tune_space == {"reg": [0.1], "iterations": [3]}
    assert candidates({"maxIter": [3, 4]}, "grid", 5, 0) == [{"iterations": 3}, {"iterations": 4}]


def test_gate_metric_and_engine_are_checked_when_settings_load():
    from pydantic import ValidationError

    from batch.engines import ENGINES
    from lambdarec.settings import Settings

    with pytest.raises(ValidationError, match="gate_metric"):
        Settings(gate_metric="recal")
    with pytest.raises(ValidationError, match="als_engine"):
        Settings(als_engine="spark-als")
    assert {engine.name for engine in ENGINES.values()} == {"spark", "implicit"} == set(ENGINES)


def test_ease_tunes_its_penalty_alone():
    from batch.ease import EaseParams

    result = search(lambda p: -abs(p.l2 - 500.0), EaseParams(l2=100.0), {"l2": [100.0, 500.0, 1000.0]}, "grid", 5)
    assert result["best"]["params"] == {"l2": 500.0} and len(result["trials"]) == 3
    with pytest.raises(ValueError, match="cannot tune"):
        search(lambda p: 0.0, EaseParams(l2=100.0), {"rank": [8]}, "grid", 5)


def test_the_configured_parameters_are_scored_first_and_kept_unless_beaten_clearly():
    score = {8: 0.200, 16: 0.203}  # rank 16 is 1.5 % better: noise at a 2 % minimum gain
    result = search(lambda p: score[p.rank], BASE, {"rank": [16, 8]}, "grid", 5, min_gain=0.02)
    assert [t["params"]["rank"] for t in result["trials"]] == [8, 16]  # configured first, never twice
    assert result["trials"][0]["configured"] and result["best"]["params"]["rank"] == 8
    score[16] = 0.21  # 5 % better: a real gain
    assert search(lambda p: score[p.rank], BASE, {"rank": [16, 8]}, "grid", 5, min_gain=0.02)["best"]["params"]["rank"] == 16
