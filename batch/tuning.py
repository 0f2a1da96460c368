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
    min_gain: float = 0.0,
) -> dict[str, Any]:
    """Score the configured parameters (``base``) first, then candidates, until the trials or the time
    budget (0 = none) run out. A candidate replaces ``base`` only if its metric beats base's by more
    than ``min_gain`` (relative): on a small validation split most differences are noise, and the
    configured values are the ones evaluation on real data chose.

    A trial always finishes once started, so the budget can be overrun by one fit.
    """
    started = clock()
    tunable = TUNABLE[type(base)]
    configured = {k: getattr(base, k) for k in tunable}
    done: list[dict[str, Any]] = [{"params": configured, "metric": float(score(base)), "configured": True}]
    for values in candidates(space, method, trials, getattr(base, "seed", 0), tunable):
        typed: dict[str, Any] = {k: (int(v) if k in INTEGER_PARAMS else float(v)) for k, v in values.items()}
        params = replace(base, **typed)
        tried = {k: getattr(params, k) for k in tunable}
        if tried == configured:
            continue
        if len(done) >= trials or (budget_s and clock() - started >= budget_s):
            break
        done.append({"params": tried, "metric": float(score(params))})
    best = max(done, key=lambda trial: trial["metric"])
    if best["metric"] <= done[0]["metric"] * (1.0 + min_gain):
        best = done[0]
    return {"method": method, "trials": done, "best": best, "elapsed_s": round(clock() - started, 3)}
