"""Merge the batch view and the speed view into one ranked list for a user.

Strategies, best first:
- ``fold_in``: the user has interactions newer than the model's event snapshot
  on items the model knows; their vector is re-solved from training + fresh ratings;
- ``model``: nothing fresh; the stored ALS vector;
- ``popular``: the model knows nothing about the user (or there is no model yet).
Items the user already interacted with (training or speed view) are never returned.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from serving.foldin import fold_in, top_k
from serving.model_store import Model
from serving.speed_view import Interaction, SpeedView


@dataclass(frozen=True)
class Recommendation:
    items: list[tuple[str, float]]
    strategy: str
    model_version: int | None
    fresh_interactions: int


def recommend(
    model: Model | None, speed: SpeedView, user_key: str, k: int
) -> Recommendation:
    """Top ``k`` items for the pseudonymous ``user_key``."""
    history = speed.interactions(user_key)
    if model is None:
        seen = {interaction.item_id for interaction in history}
        return Recommendation(speed.popular(k, exclude=seen), "popular", None, len(history))

    fresh = [i for i in history if i.events_version > model.source_events_version]
    user_position = model.user_positions.get(user_key)
    if user_position is None:
        train_items = np.empty(0, dtype=np.int64)
        train_ratings = np.empty(0, dtype=np.float64)
    else:
        train_items, train_ratings = model.history(user_position)
    speed_items = _known_positions(model, history)
    exclude = np.union1d(train_items, speed_items)

    fresh_ratings = _ratings_by_position(model, fresh)
    if fresh_ratings:
        ratings = defaultdict(float, zip(train_items.tolist(), train_ratings.tolist()))
        for position, weight in fresh_ratings.items():
            ratings[position] += weight
        positions = np.fromiter(ratings.keys(), dtype=np.int64, count=len(ratings))
        values = np.fromiter(ratings.values(), dtype=np.float64, count=len(ratings))
        vector = fold_in(model.item_factors, model.yty, positions, values, model.reg_param, model.alpha)
        scores, strategy = model.item_factors @ vector, "fold_in"
    elif user_position is not None:
        scores, strategy = model.item_factors @ model.user_factors[user_position], "model"
    else:
        scores, strategy = model.popularity, "popular"
    best = top_k(scores, k, exclude)
    items = [(str(model.item_ids[p]), float(scores[p])) for p in best]
    return Recommendation(items, strategy, model.version, len(fresh))


def _known_positions(model: Model, interactions: list[Interaction]) -> np.ndarray:
    positions = {model.item_positions.get(i.item_id) for i in interactions}
    positions.discard(None)
    return np.fromiter(positions, dtype=np.int64, count=len(positions))


def _ratings_by_position(model: Model, interactions: list[Interaction]) -> dict[int, float]:
    """Summed weights per item the model knows (a new item cannot be folded in)."""
    ratings: dict[int, float] = defaultdict(float)
    for interaction in interactions:
        position = model.item_positions.get(interaction.item_id)
        if position is not None:
            ratings[position] += interaction.weight
    return dict(ratings)
