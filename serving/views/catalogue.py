"""The catalogue every request scores against: the serving model's items plus new ones.

New items are those only the speed layer has seen, folded in so they are
recommendable before training. A new item's vector solves the item step of
implicit ALS against the fixed user vectors of the users who interacted with it
(the symmetric fold-in, same confidence and regularisation as the model). A user the model does not know
contributes through a vector folded in from their interactions with known items.

An item-item (EASE) model has no vectors to fold a new item in against: its
catalogue is the model's items until the next training run.

The result extends the model's catalogue: positions past the model's items, and
a Gram matrix over all of them, so user fold-in stays the exact ALS step over the
extended catalogue. It is cached per (model, speed-view generation).

Fold-in is bounded and off the request path. A refit folds in only the new items
whose users changed since it last folded them (``Folded``), at most
``serve_foldin_items`` of them (never-folded first, then the most recently
changed), each from at most ``FOLDIN_USERS_PER_ITEM`` of its users; the rest wait
for the next refit. Requests take the newest catalogue built (``CatalogueCache.current``)
and never build one: a background thread refits at most every
``serve_foldin_interval_s`` while the speed view changes.

Ranking (``Catalogue.top``) scores candidates, not every item, where it can: a
narrow filter's items, or an ALS model's item index neighbours (``lambdarec.item_index``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import faiss
import numpy as np

from lambdarec.model_bundle import gram
from serving.foldin import fold_in, fold_in_rows, top_k
from serving.views.model import Model
from serving.views.speed.view import SpeedView

LOOKUP_CHUNK = 250  # item ids looked up between two pauses of a swap: a short stretch of work
FEW_ALLOWED = 0.25  # a filter passing at most this share of the items: score just those, exactly
OVERSAMPLE = 2  # index candidates per wanted item, after the filters' share of the items
MAX_CANDIDATES = 1_000  # past this many, scoring every item of a 100k-item model is cheaper than the search
FOLDIN_USERS_PER_ITEM = 200  # an item's most recent users that fold it in: a vector's worth, at a bounded cost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalogue:
    """The model's items plus folded-in new items; positions index ``[model items..., new items...]``."""

    model: Model
    generation: int
    new_ids: np.ndarray  # object array
    new_factors: np.ndarray  # n_new x rank, float32
    new_positions: dict[str, int]  # item id -> position (>= n_model)
    yty: np.ndarray  # Gram over model and new items
    waiting: int = 0  # new items with changes this catalogue has not folded in yet (the refit's bound)

    def fresh(self, speed: SpeedView) -> bool:
        """Whether it holds everything the speed view has now."""
        return self.generation == speed.generation and not self.waiting

    @property
    def size(self) -> int:
        return len(self.model.item_ids) + len(self.new_ids)

    def position(self, item_id: str) -> int | None:
        position = self.model.item_positions.get(item_id)
        return position if position is not None else self.new_positions.get(item_id)

    def item_id(self, position: int) -> str:
        n = len(self.model.item_ids)
        return str(self.model.item_ids[position] if position < n else self.new_ids[position - n])

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        """The factor rows at catalogue ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        n = len(self.model.item_ids)
        if not len(self.new_ids):
            return np.take(self.model.item_factors, positions, axis=0)
        out = np.empty((len(positions), self.model.item_factors.shape[1]), dtype=np.float32)
        old = positions < n
        out[old] = np.take(self.model.item_factors, positions[old], axis=0)
        out[~old] = self.new_factors[positions[~old] - n]
        return out

    def filtered_rows(self, positions: np.ndarray) -> np.ndarray:
        """The factor rows at ascending ``positions``, the model's part from its cached blocks
        (``serving.views.factor_blocks``)."""
        cut = int(np.searchsorted(positions, len(self.model.item_ids)))
        rows = self.model.factor_blocks.rows(positions if cut == len(positions) else positions[:cut])
        return rows if cut == len(positions) else np.concatenate([rows, self.vectors(positions[cut:])])

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """Scores of every catalogue item for a user vector, in float32."""
        x = np.asarray(vector, dtype=np.float32)
        scores = self.model.item_factors @ x
        return np.concatenate([scores, self.new_factors @ x]) if len(self.new_ids) else scores

    def top(self, vector: np.ndarray, k: int, blocked: np.ndarray, allowed: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best positions for a user vector and their exact scores, best first, never a
        ``blocked`` one and only ``allowed`` ones (as ``top_k``, ties by position).

        Only candidates are scored: the allowed items themselves when a filter passes few of
        them, else (with the model's item index) its approximate neighbours, oversampled for
        what the filters drop, plus the new items. When the neighbours that survive are fewer
        than ``k``, or there is no index, every item is scored."""
        found = self.candidates(vector, k, blocked, allowed)
        if found is not None:
            candidates, exhaustive = found
            if exhaustive:  # every item a narrow filter passes: the same rows request after request
                best, scores = top_rows(self.filtered_rows(candidates), vector, k, indices_of(candidates, blocked))
                return candidates[best], scores
            candidates = candidates[~np.isin(candidates, blocked)]
            if allowed is not None:
                candidates = candidates[allowed[candidates]]
            if len(candidates) >= k:
                scores = self.vectors(candidates) @ np.asarray(vector, dtype=np.float32)
                best = top_k(scores, k)
                return candidates[best], scores[best]
        scores = self.scores(vector)
        best = top_k(scores, k, blocked, allowed)
        return best, scores[best]

    def candidates(self, vector: np.ndarray, k: int, blocked: np.ndarray, allowed: np.ndarray | None
                    ) -> tuple[np.ndarray, bool] | None:
        """(positions in ascending order, whether they are every item that may be returned), or None
        to score every item."""
        if allowed is not None:
            passing = passing_positions(allowed)
            if len(passing) <= FEW_ALLOWED * self.size:
                return passing, True
        index = self.model.item_index
        if index is None:
            return None
        share = 1.0 if allowed is None else len(passing) / self.size
        count = int(np.ceil(OVERSAMPLE * k / share)) + len(blocked)
        if count > MAX_CANDIDATES:
            return None
        near = index.candidates(vector, count)
        return np.concatenate([np.sort(near), np.arange(len(self.model.item_ids), self.size)]), False


_passing: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def passing_positions(mask: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(mask)``; for a shared (read-only) mask, computed once and kept while the mask
    lives, since the same filters come back request after request. The result is read-only."""
    if mask.flags.writeable:
        return np.flatnonzero(mask)
    key = id(mask)
    found = _passing.get(key)
    if found is not None and found[0]() is mask:
        return found[1]
    positions = np.flatnonzero(mask)
    positions.flags.writeable = False

    def forget(_: weakref.ref) -> None:
        _passing.pop(key, None)

    _passing[key] = (weakref.ref(mask, forget), positions)
    return positions


def top_rows(rows: np.ndarray, vector: np.ndarray, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``top_k(rows @ vector, k, exclude)`` and those scores.

    faiss's scan keeps the best rows in a heap as it scores them, where a product into an array
    and ``top_k`` over it pass over the scores twice: cheaper when, as on a busy server, the
    caches hold little of a filter's rows (README: measurements). Where the heap cannot settle the
    answer exactly as ``top_k`` would, a tie at its cut or a score that is not finite, both run.
    """
    x = np.ascontiguousarray(vector, dtype=np.float32)
    heap = min(k + len(exclude) + 1, len(rows))  # one past what ``exclude`` can take: the cut is seen
    if k > 0 and heap < len(rows):
        distances, labels = faiss.knn(x[None], rows, heap, metric=faiss.METRIC_INNER_PRODUCT)
        found_scores, found = distances[0], labels[0]
        if np.isfinite(found_scores).all():
            kept = np.isin(found, exclude, invert=True)
            found, scores = found[kept], found_scores[kept]
            best = np.lexsort((found, -scores))[:k]  # ties by position, as ``top_k``
            if len(best) == k and scores[best[-1]] > found_scores[-1]:  # no row left out ties the k-th
                return found[best], scores[best]
    scores = rows @ x
    best = top_k(scores, k, exclude)
    return best, scores[best]


def indices_of(ascending: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The indices in ``ascending`` (sorted, unique) of the ``wanted`` values it holds: a binary
    search per wanted value, where ``np.isin`` would sort both arrays."""
    if not len(ascending) or not len(wanted):
        return np.empty(0, dtype=np.int64)
    at = np.minimum(np.searchsorted(ascending, wanted), len(ascending) - 1)
    return at[ascending[at] == wanted]


class KnownItems:
    """Whether each speed-view item is in a model, looked up once per item.

    The catalogue is rebuilt on every speed-view update, and the view's items
    change little from one update to the next; a lookup is a binary search over
    byte strings (about 0.35 us an id), too slow to repeat for every item each time.
    """

    def __init__(self, model: Model):
        self.model = model
        self._known: dict[str, bool] = {}

    def unknown(self, items: list[str], pause: Callable[[], object] = lambda: None) -> list[str]:
        """The ``items`` the model lacks; ``pause()`` runs between chunks of new lookups. Answers about
        items the view no longer has are dropped once they outnumber its items (bounded memory)."""
        if len(self._known) > 2 * len(items) + LOOKUP_CHUNK:
            self._known = {item: self._known[item] for item in items if item in self._known}
        new = [item for item in items if item not in self._known]
        for start in range(0, len(new), LOOKUP_CHUNK):
            pause()
            chunk = new[start : start + LOOKUP_CHUNK]
            self._known.update(zip(chunk, (self.model.item_positions.lookup(chunk) >= 0).tolist(), strict=True))
        return [item for item in items if not self._known[item]]


class Folded:
    """The new items folded in against one model so far: each one's vector and the view's stamp of the
    item (``SpeedView.item_stamps``) when it was folded; refits fold again only what changed since."""

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}
        self.stamps: dict[str, int] = {}
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # ids, factors, Gram

    def put(self, item: str, stamp: int, vector: np.ndarray | None) -> None:
        self.stamps[item] = stamp
        if vector is not None:
            self.vectors[item] = vector
        elif self.vectors.pop(item, None) is None:
            return
        self._arrays = None

    def keep(self, items: AbstractSet[str]) -> None:
        """Forget the items not in ``items`` (gone from the view, or known to the model)."""
        for item in [item for item in self.stamps if item not in items]:
            del self.stamps[item]
            if self.vectors.pop(item, None) is not None:
                self._arrays = None

    def arrays(self, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids in order, their factors, the factors' Gram), built once per change."""
        if self._arrays is None:
            ids = sorted(self.vectors)
            factors = np.asarray([self.vectors[item] for item in ids], dtype=np.float32).reshape(len(ids), rank)
            self._arrays = (np.asarray(ids, dtype=object), factors, gram(factors))
        return self._arrays


def build(
    model: Model, speed: SpeedView, known: KnownItems | None = None, pause: Callable[[], object] = lambda: None,
    folded: Folded | None = None, limit: int | None = None,
) -> Catalogue:
    """Fold in the items the speed view has and the model lacks (ALS models only) that changed since
    ``folded`` last saw them: at most ``limit`` (None: all), never-folded first, then the most recently
    changed. ``folded`` is updated."""
    generation, items = speed.item_ids()
    if model.family != "als":
        items = []
    folded = Folded() if folded is None else folded
    unknown = (known or KnownItems(model)).unknown(items, pause)
    stamps = speed.item_stamps(unknown)
    folded.keep(stamps.keys())
    stale = [item for item in stamps if folded.stamps.get(item) != stamps[item]]
    chosen = stale if limit is None or len(stale) <= limit else heapq.nlargest(
        limit, stale, key=lambda item: (item not in folded.stamps, stamps[item]))
    users_by_item = speed.item_users(chosen)
    user_vectors: dict[str, np.ndarray | None] = {}
    for item in sorted(chosen):
        pause()
        folded.put(item, stamps[item], _item_vector(model, speed, users_by_item.get(item, {}), user_vectors))
    rank = model.item_factors.shape[1]
    ids, factors, new_gram = folded.arrays(rank)
    n = len(model.item_ids)
    return Catalogue(
        model=model,
        generation=generation,
        new_ids=ids,
        new_factors=factors,
        new_positions={item: n + j for j, item in enumerate(ids)},
        yty=model.yty + new_gram if len(ids) else model.yty,
        waiting=len(stale) - len(chosen),
    )


def bare(model: Model) -> Catalogue:
    """The model's items alone: what requests score before the first refit for a model."""
    rank = model.item_factors.shape[1]
    return Catalogue(model=model, generation=-1, new_ids=np.empty(0, dtype=object),
                     new_factors=np.empty((0, rank), dtype=np.float32), new_positions={}, yty=model.yty)


def _item_vector(model: Model, speed: SpeedView, item_users: dict[str, float],
                 user_vectors: dict[str, np.ndarray | None]) -> np.ndarray | None:
    """A new item's vector from its most recent users' vectors (None: none of them has one)."""
    users, ratings = [], []
    for user, weight in itertools.islice(reversed(item_users.items()), FOLDIN_USERS_PER_ITEM):
        if user not in user_vectors:
            user_vectors[user] = _user_vector(model, speed, user)
        vector = user_vectors[user]
        if vector is not None:
            users.append(vector)
            ratings.append(weight)
    if not users or not any(r > 0 for r in ratings):
        return None
    return fold_in_rows(model.xtx, np.asarray(users), np.asarray(ratings), model.reg_param, model.confidence,
                        model.reg_scaling)


def _user_vector(model: Model, speed: SpeedView, user: str) -> np.ndarray | None:
    """The model's vector for ``user``, else one folded in from their known items (None if none)."""
    position = model.user_positions.get(user)
    if position is not None:
        return model.user_factors[position]
    ratings: dict[int, float] = {}
    for interaction in speed.interactions(user):
        item = model.item_positions.get(interaction.item_id)
        if item is not None:
            ratings[item] = ratings.get(item, 0.0) + interaction.weight
    if not ratings:
        return None
    positions = np.fromiter(ratings, dtype=np.int64)
    values = np.fromiter(ratings.values(), dtype=np.float64)
    return fold_in(model.item_factors, model.yty, positions, values, model.reg_param, model.confidence, model.reg_scaling)


class CatalogueCache:
    """Catalogues of the serving model and of one being prepared for a swap, refitted off the request
    path while the speed view changes.

    ``get`` refits now (a swap's preparation, the background thread, tests); ``current``
    is for requests: it never builds. Builds lock per model version: a swap's build
    pauses for requests in flight (``serving.idle_gate``), and the serving model's
    refit must not wait behind it.
    """

    KEPT = 2

    def __init__(self, limit: int | None = None, interval_s: float = 1.0) -> None:
        """``limit``: new items folded in per refit (None: all); ``interval_s``: least time between
        two background refits."""
        self.limit = limit
        self.interval_s = interval_s
        self._lock = threading.Lock()  # guards the dicts below
        self._by_version: dict[int, Catalogue] = {}
        self._known: dict[int, KnownItems] = {}
        self._folded: dict[int, Folded] = {}
        self._building: dict[int, threading.Lock] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, model: Model, speed: SpeedView, pause: Callable[[], object] = lambda: None) -> Catalogue:
        """The catalogue of ``model`` refitted to the view's generation (at most ``limit`` items
        folded in); ``pause()`` runs between the steps of a build (``serving.idle_gate``)."""
        current = self._fresh(model, speed)
        if current is not None:
            return current
        with self._lock:
            building = self._building.setdefault(model.version, threading.Lock())
        with building:
            current = self._fresh(model, speed)
            if current is not None:
                return current
            known, folded = self._known.get(model.version), self._folded.get(model.version)
            if known is None or known.model is not model or folded is None:
                known, folded = KnownItems(model), Folded()
            current = build(model, speed, known, pause, folded, self.limit)
            with self._lock:
                if model.version not in self._by_version and len(self._by_version) >= self.KEPT:
                    evicted = next(iter(self._by_version))  # the longest-held version
                    for held in (self._by_version, self._known, self._folded, self._building):
                        held.pop(evicted, None)
                self._by_version[model.version] = current
                self._known[model.version], self._folded[model.version] = known, folded
            return current

    def current(self, model: Model, speed: SpeedView) -> Catalogue:
        """The newest catalogue of ``model`` built so far (its own items alone before the first), at
        once: a refit is asked of the background thread when the view has moved on."""
        found = self._by_version.get(model.version)
        if found is None or found.model is not model:
            found = bare(model)
        if not found.fresh(speed):
            self._wake.set()
        return found

    def start(self, serving: Callable[[], Model | None], speed: SpeedView,
              pause: Callable[[], object] = lambda: None) -> None:
        """Refit the ``serving()`` model's catalogue in a daemon thread whenever ``current`` asks."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._refit, args=(serving, speed, pause),
                                        name="lambdarec-catalogue-refit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _refit(self, serving: Callable[[], Model | None], speed: SpeedView, pause: Callable[[], object]) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            model = serving()
            if self._stop.is_set() or model is None:
                continue
            try:
                if self.get(model, speed, pause).waiting:
                    self._wake.set()  # more new items than one refit folds: go on after the interval
            except Exception:  # a failed refit leaves the last catalogue serving; the next request asks again
                log.exception("catalogue refit failed")
            self._stop.wait(self.interval_s)

    def _fresh(self, model: Model, speed: SpeedView) -> Catalogue | None:
        current = self._by_version.get(model.version)
        if current is not None and current.model is model and current.fresh(speed):
            return current
        return None
