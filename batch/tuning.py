"""Hyperparameter search for a model family: grid or seeded random, within a trial and time budget.

The search never sees the test holdout: the training job splits its training
events again (the same split method), fits each candidate on the first part
and scores it on the second (the validation metric); only the winner is then
fitted on all training events and judged on the test holdout.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from batch.ease import EaseParams
from batch.engines import AlsParams
from lambdarec.settings import ALS_PARAMS, canonical_als_params

TUNABLE: dict[type, tuple[str, ...]] = {AlsParams: ALS_PARAMS, EaseParams: ("l2",)}
INTEGER_PARAMS = ("rank", "iterations")


def candidates(
    space: dict[str, list[float]], method: str, trials: int, seed: int, tunable: tuple[str, ...] = ALS_PARAMS
) -> list[dict[str, float]]:
    """Up to ``trials`` parameter sets: the grid in order, or a seeded sample of it without repeats."""
    space = canonical_als_params(space)
    unknown = set(space) - set(tunable)
    if unknown:
        raise ValueError(f"cannot tune {sorted(unknown)}; tunable: {list(tunable)}")
    if method not in ("grid", "random"):
        raise ValueError(f"tuning method must be grid or random, got {method!r}")
    names = sorted(space)
    grid = [dict(zip(names, values, strict=True)) for values in itertools.product(*(space[n] for n in names))]
    if method == "random":
        grid = [grid[i] for i in np.random.default_rng(seed).permutation(len(grid))]
    return grid[:trials]


def search(
    score: Callable[[Any], float],
    base: AlsParams | EaseParams,
    space: dict[str, list[float]],
    method: str,
    trials: int,
    budget_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Score candidates until the trials or the time budget (0 = none) run out; the best wins.

    A trial always finishes once started, so the budget can be overrun by one fit.
    """
    started = clock()
    done: list[dict[str, Any]] = []
    tunable = TUNABLE[type(base)]
    for values in candidates(space, method, trials, getattr(base, "seed", 0), tunable):
        if done and budget_s and clock() - started >= budget_s:
            break
        typed: dict[str, Any] = {k: (int(v) if k in INTEGER_PARAMS else float(v)) for k, v in values.items()}
        params = replace(base, **typed)
        done.append({"params": {k: getattr(params, k) for k in tunable}, "metric": float(score(params))})
    if not done:
        raise ValueError("the search space is empty")
    best = max(done, key=lambda trial: trial["metric"])
    return {"method": method, "trials": done, "best": best, "elapsed_s": round(clock() - started, 3)}
