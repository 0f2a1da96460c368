"""Merge the batch view and the speed view into one ranked list for a user.

Strategies, best first:
- ``neighbours``: an item-item (EASE) model; the user's training and fresh
  interactions each score their items' neighbours, summed (no solve);
- ``fold_in``: an ALS model, and the user has interactions it was not trained on (newer than
  its event snapshot, held out of training, or on items only the speed layer
  knows); their vector is re-solved exactly from training + fresh ratings;
- ``model``: an ALS model and nothing fresh; the stored vector;
- ``trending_segment`` / ``trending_global``: cold start, the user has no history;
  trending items for their segment (country, then device, from the request or
  their profile), else globally;
- ``popular``: nothing trends yet: the model's (or the speed view's) most used items.
With ``exclude_seen`` an item the user interacted with (training or speed view) is
never returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from serving.foldin import contributions, normal_equations, solve, top_k
from serving.views.item_attributes import ItemAttributes
from serving.views.catalogue import Catalogue
from schemas.speed_updates import GLOBAL_SEGMENT, SEGMENT_ATTRIBUTES
from serving.views.speed.state import Interaction
from serving.views.speed.view import SpeedView

EXPLAIN_TOP = 3  # "because you ..." items per recommendation


@dataclass(frozen=True)
class Query:
    k: int = 10
    exclude_seen: bool = True
    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    filters: dict[str, set[str]] = field(default_factory=dict)
    explain: bool = False
    segment: dict[str, str] = field(default_factory=dict)  # e.g. {"country": "DE"} from the request


@dataclass(frozen=True)
class Because:
    item_id: str
    contribution: float


@dataclass(frozen=True)
class Scored:
    item_id: str
    score: float
    because: list[Because] | None = None
    via: str | None = None  # "category:<c>": an item no model knows yet, chosen by the user's strongest category


@dataclass(frozen=True)
class Recommendation:
    items: list[Scored]
    strategy: str
    model_version: int | None
    fresh_interactions: int
    segment: str | None = None
    model_family: str | None = None  # the family that scored the items; None for cold start


def recommend(
    catalogue: Catalogue | None,
    speed: SpeedView,
    attributes: ItemAttributes,
    user_key: str,
    query: Query = Query(),
    erased: bool = False,
    personal: bool = True,
    profile: dict[str, Any] | None = None,
    newcomer_slots: int = 0,
) -> Recommendation:
    """Top ``query.k`` items for the pseudonymous ``user_key``; an ``erased`` user's row of the model
    (and their training interactions) is not used: they are new to it. Without ``personal`` (no
    consent) nothing of the user is: the answer is the request's segment's, as for a stranger.
    ``profile`` is the user's row of ``user_profiles`` (the operational database's), whose country is
    their segment when neither the request nor their recent events give one. Up to ``newcomer_slots``
    places go to items only the catalogue knows, of the user's strongest category."""
    if not personal:
        return _cold_start(catalogue, speed, attributes, None, query, [])
    history = speed.interactions(user_key)
    if catalogue is None:
        return _cold_start(None, speed, attributes, user_key, query, history, profile)
    model = catalogue.model
    user = None if erased else model.user_positions.get(user_key)
    if user is None:
        train_items, train_ratings = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    else:
        train_items, train_ratings = model.history(user)
    fresh, n_fresh = _fresh(catalogue, history, train_items)
    if not fresh and user is None:
        return _cold_start(catalogue, speed, attributes, user_key, query, history, profile)

    rated, ratings = _merge(train_items, train_ratings, fresh)
    seen = np.union1d(train_items, _positions(catalogue, {i.item_id for i in history}))
    blocked, allowed = _blocked(catalogue, attributes, query, seen), _allowed(catalogue, attributes, query)
    if model.family == "ease":
        scores, explain = _neighbour_scores(catalogue, rated, ratings)
        best = top_k(scores, query.k, blocked, allowed)
        best_scores = scores[best]
        strategy = "neighbours"
    else:
        vector: np.ndarray | None = model.user_factors[user] if user is not None else None
        a: np.ndarray | None = None
        if fresh or query.explain:
            yty = catalogue.yty if fresh else model.yty
            a, b = normal_equations(
                yty, catalogue.vectors(rated), ratings, model.reg_param, model.confidence, model.reg_scaling
            )
            vector = solve(a, b) if fresh else vector
        assert vector is not None  # a known user has a stored vector; an unknown one has fresh interactions
        best, best_scores = catalogue.top(vector, query.k, blocked, allowed)
        explain = partial(_explain, catalogue, a, rated, ratings)
        strategy = "fold_in" if fresh else "model"
    because: list[list[Because] | None] = list(explain(best)) if query.explain else [None] * len(best)
    items = [Scored(catalogue.item_id(p), float(score), why)
             for p, score, why in zip(best, best_scores, because, strict=True)]
    if newcomer_slots:
        items = _with_newcomers(catalogue, speed, attributes, user_key, query, rated, ratings, history, items,
                                newcomer_slots)
    return Recommendation(items, strategy, model.version, n_fresh, model_family=model.family)


def _with_newcomers(catalogue: Catalogue, speed: SpeedView, attributes: ItemAttributes, user_key: str, query: Query,
                    rated: np.ndarray, ratings: np.ndarray, history: list[Interaction], items: list[Scored],
                    slots: int) -> list[Scored]:
    """``items`` with up to ``slots`` of its last places given to items of the user's strongest
    category that no model knows yet: a new item with only attributes can be recommended before
    anyone has used it."""
    category = _strongest_category(catalogue, speed, attributes, user_key, rated, ratings)
    if category is None:
        return items
    taken = {s.item_id for s in items} | {i.item_id for i in history} | set(query.exclude)
    chosen = [item for item in attributes.newcomers(catalogue, category)
              if item not in taken and attributes.available(item) and (not query.include or item in query.include)
              and (not query.filters or attributes.matches(item, query.filters))][:min(slots, query.k)]
    if not chosen:
        return items
    score = items[-1].score if items else 0.0
    kept = items[:max(query.k - len(chosen), 0)] if len(items) + len(chosen) > query.k else items
    return kept + [Scored(item, score, [] if query.explain else None, f"category:{category}") for item in chosen]


def _strongest_category(catalogue: Catalogue, speed: SpeedView, attributes: ItemAttributes, user_key: str,
                        rated: np.ndarray, ratings: np.ndarray) -> str | None:
    """The user's category affinity: the speed layer's count of their last day's interactions per
    category (``categories_24h``, what they are into now), else the summed weights of all they rated."""
    features = speed.profile(user_key)
    affinity: dict[str, float] = dict((features or {}).get("categories_24h") or {})
    if not affinity:
        for position, weight in zip(rated, ratings, strict=True):
            category = attributes.categories.get(catalogue.item_id(int(position)))
            if category is not None:
                affinity[category] = affinity.get(category, 0.0) + float(weight)
    return max(affinity, key=lambda name: (affinity[name], name)) if affinity else None


def _neighbour_scores(
    catalogue: Catalogue, rated: np.ndarray, ratings: np.ndarray
) -> tuple[np.ndarray, Callable[[np.ndarray], list[list[Because]]]]:
    """EASE: each rated item's row of B, weighted by its confidence and summed (no solve); and the
    explanation of a list, ``x_j * B[j, c]`` per rated item j and recommended item c."""
    model = catalogue.model
    x = model.confidence.positive(ratings)
    weights = model.neighbours[rated]
    scores = np.asarray(weights.T @ x, dtype=np.float32).ravel()

    def explain(best: np.ndarray) -> list[list[Because]]:
        parts = (weights[:, best].toarray() * x[:, None]).T  # (best x rated)
        return [_strongest(catalogue, rated, row) for row in parts]

    return scores, explain


def _fresh(
    catalogue: Catalogue, history: list[Interaction], train_items: np.ndarray
) -> tuple[dict[int, float], int]:
    """Summed weights per catalogue position of the interactions the model did not train on, and their count.

    An interaction is covered when it is in the model's event snapshot and the
    model has a training rating for that (user, item); anything else (newer events,
    held-out events, a user or item the model lacks) is folded in.
    """
    model = catalogue.model
    trained = set(train_items.tolist())
    fresh: dict[int, float] = {}
    count = 0
    for interaction in history:
        position = catalogue.position(interaction.item_id)
        if position is None:
            continue
        in_snapshot = interaction.events_version is not None and interaction.events_version <= model.source_events_version
        if in_snapshot and position in trained:
            continue
        fresh[position] = fresh.get(position, 0.0) + interaction.weight
        count += 1
    return fresh, count


def _merge(
    train_items: np.ndarray, train_ratings: np.ndarray, fresh: dict[int, float]
) -> tuple[np.ndarray, np.ndarray]:
    if not fresh:
        return np.asarray(train_items, dtype=np.int64), np.asarray(train_ratings, dtype=np.float64)
    ratings = dict(zip(train_items.tolist(), train_ratings.tolist(), strict=True))
    for position, weight in fresh.items():
        ratings[position] = ratings.get(position, 0.0) + weight
    return np.fromiter(ratings, dtype=np.int64, count=len(ratings)), np.fromiter(
        ratings.values(), dtype=np.float64, count=len(ratings)
    )


def _positions(catalogue: Catalogue, item_ids) -> np.ndarray:
    positions = [catalogue.position(item) for item in item_ids]
    return np.asarray([p for p in positions if p is not None], dtype=np.int64)


def _blocked(catalogue: Catalogue, attributes: ItemAttributes, query: Query, seen: np.ndarray) -> np.ndarray:
    """Positions never recommended: excluded, unavailable in the catalogue, and (``exclude_seen``) seen."""
    explicit = np.union1d(_positions(catalogue, query.exclude), attributes.unavailable_positions(catalogue))
    return np.union1d(seen, explicit) if query.exclude_seen else explicit


def _allowed(catalogue: Catalogue, attributes: ItemAttributes, query: Query) -> np.ndarray | None:
    allowed = attributes.mask(catalogue, query.filters) if query.filters else None
    if query.include:
        only = np.zeros(catalogue.size, dtype=bool)
        only[_positions(catalogue, query.include)] = True
        allowed = only if allowed is None else allowed & only
    return allowed


def _explain(catalogue: Catalogue, a, rated: np.ndarray, ratings: np.ndarray, best: np.ndarray) -> list:
    """Per recommended item, the user's items that added most to its score."""
    if a is None or not len(best) or not len(rated):
        return [[] for _ in best]
    parts = contributions(a, catalogue.vectors(rated), ratings, catalogue.model.confidence, catalogue.vectors(best))
    return [_strongest(catalogue, rated, row) for row in parts]


def _strongest(catalogue: Catalogue, rated: np.ndarray, row: np.ndarray) -> list[Because]:
    """The rated items with the largest positive contributions in ``row`` (one per rated item)."""
    order = [j for j in np.argsort(-row)[:EXPLAIN_TOP] if row[j] > 0]
    return [Because(catalogue.item_id(int(rated[j])), float(row[j])) for j in order]


def _cold_start(
    catalogue: Catalogue | None,
    speed: SpeedView,
    attributes: ItemAttributes,
    user_key: str | None,
    query: Query,
    history: list[Interaction],
    profile: dict[str, Any] | None = None,
) -> Recommendation:
    """Trending for the user's segment, else global trending, else the most used items."""
    version = catalogue.model.version if catalogue else None
    seen = {i.item_id for i in history} if query.exclude_seen else set()

    def keep(item: str) -> bool:
        return (
            item not in seen
            and item not in query.exclude
            and attributes.available(item)
            and (not query.include or item in query.include)
            and (not query.filters or attributes.matches(item, query.filters))
        )

    found = trending(speed, _segments(speed, user_key, query, profile), query.k, keep)
    if found is not None:
        items, strategy, label, _window = found
        return Recommendation(items, strategy, version, len(history), label)
    if catalogue is None:
        ranked = speed.popular(len(seen) + len(query.exclude) + query.k + 1_000)
        return Recommendation([Scored(i, s) for i, s in ranked if keep(i)][: query.k], "popular", None, len(history))
    popularity = np.concatenate([catalogue.model.popularity, np.zeros(len(catalogue.new_ids))])
    blocked = _blocked(catalogue, attributes, query, _positions(catalogue, seen))
    best = top_k(popularity, query.k, blocked, _allowed(catalogue, attributes, query))
    items = [Scored(catalogue.item_id(p), float(popularity[p])) for p in best]
    return Recommendation(items, "popular", version, len(history))


def trending(
    speed: SpeedView, segments: list[tuple[str, str]], k: int, keep=lambda item: True
) -> tuple[list[Scored], str, str | None, str | None] | None:
    """(items, strategy, segment label, window start) from the first of ``segments`` with items
    ``keep`` accepts, else from global trending; None if nothing trends. Every segment ranks
    the same sliding window (``speed_trending_window_s`` ending at the speed layer's newest minute)."""
    for segment in [*segments, GLOBAL_SEGMENT]:
        ranked, window = speed.trending(segment, k=1_000_000)
        items = [Scored(item, score) for item, score in ranked if keep(item)][:k]
        if items:
            if segment == GLOBAL_SEGMENT:
                return items, "trending_global", None, window
            return items, "trending_segment", f"{segment[0]}:{segment[1]}", window
    return None


def _segments(speed: SpeedView, user_key: str | None, query: Query,
              profile: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """The user's segments, most specific first: the request's values, else their recent events'
    (the speed profile), else their operational profile's (if known)."""
    recent = (speed.profile(user_key) if user_key else None) or {}
    segments = []
    for name in SEGMENT_ATTRIBUTES:
        value = query.segment.get(name) or recent.get(name) or (profile or {}).get(name)
        if value:
            segments.append((name, str(value)))
    return segments


def similar(catalogue: Catalogue, attributes: ItemAttributes, item_id: str, query: Query) -> list[Scored] | None:
    """Items closest to ``item_id`` (None if the item is unknown): by cosine of their factors (ALS),
    or the items its interactions score most (EASE's positive weights)."""
    position = catalogue.position(item_id)
    if position is None:
        return None
    blocked = np.union1d([position], _blocked(catalogue, attributes, replace(query, exclude_seen=False), np.empty(0)))
    if catalogue.model.family == "ease":
        weights = catalogue.model.neighbours[position].toarray().ravel()
        weights[weights <= 0] = -np.inf  # only items it speaks for
        best = top_k(weights, query.k, blocked, _allowed(catalogue, attributes, query))
        return [Scored(catalogue.item_id(p), float(weights[p])) for p in best]
    vector = catalogue.vectors(np.asarray([position]))[0]
    norms = np.concatenate([catalogue.model.item_norms, np.linalg.norm(catalogue.new_factors, axis=1)])
    scale = norms * max(float(np.linalg.norm(vector)), 1e-12)
    cosine = catalogue.scores(vector) / np.where(scale > 0, scale, np.inf)
    best = top_k(cosine, query.k, blocked, _allowed(catalogue, attributes, query))
    return [Scored(catalogue.item_id(p), float(cosine[p])) for p in best]
