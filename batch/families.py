"""The model families a training run fits and the gate compares: ALS and EASE.

Each family fits on a prepared split (``batch.train_data.Prepared``) and hands back
a ``Trained`` with what the job needs of any model: a scorer for the holdout, how
much of the snapshot it can serve, its invalid values, and its rows for the lake.
ALS models are latent factors (``user_factors``, ``item_factors``); an EASE model
is item-item weights (``item_neighbours``) with the same user and item lists, whose
vectors are empty. ``model_interactions`` holds what either was fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from batch.ease import EaseParams, ItemWeights, fit_ease
from batch.engines import AlsParams, Factors, engine
from batch.evaluate import Holdout, Scorer, factor_scorer
from batch.factor_tables import factor_rows, neighbour_rows
from lambdarec.settings import ModelFamily, Settings
from schemas.tables import ITEM_FACTORS, ITEM_NEIGHBOURS, USER_FACTORS, TableSpec

if TYPE_CHECKING:
    from batch.train_data import Prepared


@dataclass(frozen=True)
class Candidate:
    """One family with one set of hyperparameters."""

    family: ModelFamily
    params: AlsParams | EaseParams

    def engine_id(self, settings: Settings) -> str:
        """The registry's ``engine``: the ALS engine's id, or ``ease``."""
        return settings.als_engine if self.family == "als" else "ease"

    def record(self, settings: Settings) -> dict[str, Any]:
        """The params a registry row keeps, with what serving needs to score the same way."""
        extra = {"reg_scaling": engine(settings.als_engine).reg_scaling} if self.family == "als" else {}
        return {"family": self.family, "engine": self.engine_id(settings), **self.params.record(), **extra}


class Trained(Protocol):
    def scorer(self, holdout: Holdout) -> Scorer:
        """Scores of holdout users (rows) over every item index (columns)."""

    def usable(self) -> tuple[np.ndarray, np.ndarray]:
        """(user indexes, item indexes) the model can score for or recommend."""

    def invalid_values(self) -> int:
        """Vectors or weights holding NaN or inf."""

    def tables(self, model_version: int, data: "Prepared") -> dict[TableSpec, pa.Table]:
        """The model's rows, by lake table."""


@dataclass(frozen=True)
class TrainedAls:
    factors: Factors

    def scorer(self, holdout: Holdout) -> Scorer:
        n_users, n_items = holdout.train.shape
        return factor_scorer(self.factors.dense_users(n_users), self.factors.dense_items(n_items))

    def usable(self) -> tuple[np.ndarray, np.ndarray]:
        return self.factors.user_index[usable(self.factors.users)], self.factors.item_index[usable(self.factors.items)]

    def invalid_values(self) -> int:
        f = self.factors
        return int((~np.isfinite(f.users)).any(axis=1).sum() + (~np.isfinite(f.items)).any(axis=1).sum())

    def tables(self, model_version: int, data: "Prepared") -> dict[TableSpec, pa.Table]:
        f = self.factors
        return {
            USER_FACTORS: factor_rows(USER_FACTORS, model_version, f.user_index, f.users, data.users),
            ITEM_FACTORS: factor_rows(ITEM_FACTORS, model_version, f.item_index, f.items, data.items),
        }


@dataclass(frozen=True)
class TrainedEase:
    weights: ItemWeights
    user_index: np.ndarray  # users with a positive interaction: the ones it scores for
    params: EaseParams

    def scorer(self, holdout: Holdout) -> Scorer:
        n_items = holdout.train.shape[1]
        b = self.weights.by_index(n_items)
        ratings = (holdout.weights if holdout.weights is not None else holdout.train).tocsr(copy=True)
        ratings.data = self.params.confidence().positive(ratings.data)
        return lambda users: (ratings[users] @ b).toarray()

    def usable(self) -> tuple[np.ndarray, np.ndarray]:
        w = self.weights.weights
        scored = np.zeros(w.shape[1], dtype=bool)
        scored[w.indices] = True  # an item with no incoming weight is never scored
        return self.user_index, self.weights.item_index[scored]

    def invalid_values(self) -> int:
        return int((~np.isfinite(self.weights.weights.data)).sum())

    def tables(self, model_version: int, data: "Prepared") -> dict[TableSpec, pa.Table]:
        no_vectors = np.zeros((0, 0), dtype=np.float32)
        items = self.weights.item_index
        return {
            USER_FACTORS: factor_rows(
                USER_FACTORS, model_version, self.user_index, no_vectors.reshape(len(self.user_index), 0), data.users
            ),
            ITEM_FACTORS: factor_rows(ITEM_FACTORS, model_version, items, no_vectors.reshape(len(items), 0), data.items),
            ITEM_NEIGHBOURS: neighbour_rows(model_version, self.weights),
        }


def usable(vectors: np.ndarray) -> np.ndarray:
    """Rows that are finite and not all zero (a zero vector recommends nothing)."""
    return np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)


def fit(candidate: Candidate, data: "Prepared", settings: Settings, checkpoints: str) -> Trained:
    """Fit ``candidate`` on ``data.train`` (user_index, item_index, rating)."""
    if isinstance(candidate.params, AlsParams):
        chosen = engine(settings.als_engine, blocks=max(2, settings.spark_shuffle_partitions))
        return TrainedAls(chosen.fit(data.train.sparkSession, data.train, candidate.params, checkpoints))
    rows = data.train.select("user_index", "item_index", "rating").toArrow()
    users, ratings = rows.column("user_index").to_numpy(), rows.column("rating").to_numpy()
    weights = fit_ease(users, rows.column("item_index").to_numpy(), ratings, candidate.params, settings.ease_max_items)
    return TrainedEase(weights, np.unique(users[ratings > 0]), candidate.params)


def defaults(family: ModelFamily, settings: Settings, seed: int) -> Candidate:
    """``family`` with the configured hyperparameters."""
    if family == "als":
        return Candidate("als", AlsParams(
            rank=settings.als_rank, reg=settings.als_reg, alpha=settings.als_alpha,
            iterations=settings.als_iterations, seed=seed, checkpoint_interval=settings.als_checkpoint_interval,
            scaling=settings.confidence_scaling, epsilon=settings.confidence_epsilon,
        ))
    return Candidate("ease", EaseParams(
        l2=settings.ease_l2, neighbours=settings.ease_neighbours,
        scaling=settings.confidence_scaling, epsilon=settings.confidence_epsilon,
    ))


def tune_space(family: ModelFamily, settings: Settings) -> dict[str, list[float]]:
    return dict(settings.tune_space) if family == "als" else {"l2": list(settings.ease_tune_l2)}


def sits_out(family: ModelFamily, n_items: int, settings: Settings) -> str | None:
    """Why ``family`` cannot fit a catalogue of ``n_items``, or None."""
    if family == "ease" and n_items > settings.ease_max_items:
        return f"{n_items} items is above ease_max_items ({settings.ease_max_items})"
    return None
