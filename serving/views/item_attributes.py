"""Item attributes for filters, from the ``item_catalogue`` Delta table.

Attributes belong to items, not to events, so they come from a catalogue table
that the product side owns (kept by CDC, one row per item; where several rows
name an item the newest ``updated_at`` wins), its ``category`` among them, not
from the events' context (which describes the user's device and
country). An item without a catalogue row matches no attribute filter; a
deleted item's row stays, unavailable, so the model's factors for it never
bring it back.

Availability also arrives ahead of the table: ``apply(change)`` takes a change
straight from the CDC topic (``serving.views.catalogue_changes``) and it holds until the
table has that change or a newer one (compared by LSN), so an item set
unavailable leaves the answers in the time Connect and Kafka take, not the
dimensions query's.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from lambdarec.lake import Lake
from schemas.cdc import AvailabilityChange
from schemas.tables import ITEM_CATALOGUE
from lambdarec.id_index import encode
from serving.views.model import Model
from serving.views.catalogue import LOOKUP_CHUNK, Catalogue

MASKS_KEPT = 256  # (attribute, value) masks cached per model; filters repeat a lot


class ItemAttributes:
    """attribute -> value -> item ids, reloaded when the table has a new version."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self.version: int | None = None
        self.revision = 0  # changes with every load and every change applied ahead of the table
        self.items: dict[str, dict[str, str]] = {}
        self.unavailable: frozenset[str] = frozenset()  # items the catalogue marks unavailable
        self.categories: dict[str, str] = {}  # item -> category
        self._by_category: dict[str, list[str]] = {}  # category -> its available items, newest first
        self._newcomers: dict[tuple, list[str]] = {}
        self._unavailable_positions: tuple[tuple, np.ndarray] | None = None
        self._index: dict[tuple[str, str], set[str]] = {}
        self._masks: dict[tuple, np.ndarray] = {}
        self._encoded_members: dict[tuple, np.ndarray] = {}  # (version, name, value): its members, sorted
        self._category_keys: dict[tuple, np.ndarray] = {}  # (version, category): its items, newest first
        self._table_unavailable: frozenset[str] = frozenset()
        self._table_lsn: dict[str, int] = {}  # item -> LSN of the change its table row holds
        self._ahead: dict[str, AvailabilityChange] = {}  # changes the table does not have yet
        self._lock = threading.Lock()

    def reload(self) -> bool:
        version = self.lake.version(ITEM_CATALOGUE)
        if version is None or version == self.version:
            return False
        self.load(self.lake.read_arrow(ITEM_CATALOGUE, version).to_pylist(), version)
        return True

    def load(self, rows: list[dict], version: int) -> None:
        newest: dict[str, dict] = {}
        for row in rows:
            current = newest.get(row["item_id"])
            if current is None or row["updated_at"] >= current["updated_at"]:
                newest[row["item_id"]] = row
        live = {item: row for item, row in newest.items() if not row.get("deleted")}
        items = {item: {**dict(row["attributes"] or ()), **({"category": row["category"]} if row.get("category") else {})}
                 for item, row in live.items()}
        index: dict[tuple[str, str], set[str]] = defaultdict(set)
        for item, attributes in items.items():
            for name, value in attributes.items():
                index[(name, value)].add(item)
        unavailable = frozenset(item for item, row in newest.items()
                                if row.get("available") is False or row.get("deleted"))
        categories = {item: row["category"] for item, row in live.items() if row.get("category")}
        by_category: dict[str, list[str]] = defaultdict(list)
        for item, _row in sorted(live.items(), key=lambda pair: pair[1]["updated_at"], reverse=True):
            if item in categories and item not in unavailable:
                by_category[categories[item]].append(item)
        lsns = {item: row["source_lsn"] for item, row in newest.items() if row.get("source_lsn") is not None}
        with self._lock:  # the version last: a reader that sees it sees everything it names (below)
            self.items, self._index, self._masks, self.categories, self._by_category = (
                items, dict(index), {}, categories, dict(by_category))
            self._table_unavailable, self._table_lsn = unavailable, lsns
            self._ahead = {item: change for item, change in self._ahead.items() if change.lsn > lsns.get(item, -1)}
            self._publish_unavailable()
            self._newcomers, self.version = {}, version

    def apply(self, change: AvailabilityChange) -> None:
        """A change from the CDC topic, applied until the table holds it (older than the table's: ignored)."""
        with self._lock:
            if change.lsn <= max(self._table_lsn.get(change.item_id, -1),
                                 getattr(self._ahead.get(change.item_id), "lsn", -1)):
                return
            self._ahead[change.item_id] = change
            if (change.available is True) != (change.item_id not in self.unavailable):
                self._publish_unavailable()  # only a flip costs a new set (most changes are prices, titles)

    def _publish_unavailable(self) -> None:
        """The table's unavailable items overridden by the changes ahead of it (called under the lock);
        a deleted item (``available`` None) is unavailable, as the table marks it once it has the delete."""
        unavailable = set(self._table_unavailable)
        for item, change in self._ahead.items():
            if change.available is True:
                unavailable.discard(item)
            else:
                unavailable.add(item)
        self.unavailable = frozenset(unavailable)
        self.revision += 1

    def newcomers(self, catalogue: Catalogue, category: str) -> list[str]:
        """Available items of ``category`` that no model nor the speed view knows yet (no factors, no
        interactions), newest first: what cold start from attributes can offer."""
        key = (id(catalogue), catalogue.model.version, len(catalogue.new_ids), self.version, category)
        found = self._newcomers.get(key)
        if found is None:
            members = self._by_category.get(category, [])
            # one vectorised lookup of keys encoded once per table version: a category may hold a
            # tenth of a large catalogue, and a lookup per item cost the first request of each
            # category after every swap or new speed-view item tens of milliseconds (README: measurements)
            keys = self._cached(self._category_keys, (self.version, category), lambda: encode(members))
            unknown = np.flatnonzero(catalogue.model.item_positions.lookup(keys) < 0)
            found = [members[i] for i in unknown if members[i] not in catalogue.new_positions]
            with self._lock:
                if len(self._newcomers) >= MASKS_KEPT:
                    self._newcomers.clear()
                self._newcomers[key] = found
        return found

    def available(self, item_id: str) -> bool:
        return item_id not in self.unavailable

    def unavailable_positions(self, catalogue: Catalogue) -> np.ndarray:
        """Catalogue positions of the unavailable items, cached per catalogue and table version."""
        # The revision before the set: a change between the two gives a newer set under the older key, never
        # an older set under the newer key (which would keep a restored item out until the next change).
        key = (id(catalogue), catalogue.model.version, len(catalogue.new_ids), self.revision)
        unavailable = self.unavailable
        cached = self._unavailable_positions
        if cached is not None and cached[0] == key:
            return cached[1]
        found = (catalogue.position(item) for item in unavailable)
        positions = np.asarray(sorted(p for p in found if p is not None), dtype=np.int64)
        self._unavailable_positions = (key, positions)
        return positions

    def matches(self, item_id: str, filters: dict[str, set[str]]) -> bool:
        attributes = self.items.get(item_id, {})
        return all(attributes.get(name) in values for name, values in filters.items())

    def mask(self, catalogue: Catalogue, filters: dict[str, set[str]]) -> np.ndarray:
        """Boolean mask over the catalogue's positions: values of one attribute OR, attributes AND.

        The result may be a cached mask, shared and read-only: a single name:value filter over a
        catalogue without new items, the commonest request, allocates nothing."""
        if len(filters) == 1:
            ((name, values),) = filters.items()
            if len(values) == 1:
                return self._mask(catalogue, name, next(iter(values)))
        allowed = np.ones(catalogue.size, dtype=bool)
        for name, values in filters.items():
            either = np.zeros(catalogue.size, dtype=bool)
            for value in values:
                either |= self._mask(catalogue, name, value)
            allowed &= either
        return allowed

    def _encoded(self, name: str, value: str, members: set[str]) -> np.ndarray:
        """The members of (name, value) as ``IdIndex`` keys, encoded once per catalogue version."""
        return self._cached(self._encoded_members, (self.version, name, value), lambda: encode(sorted(members)))

    def prepare(self, catalogue: Catalogue, pause: Callable[[], object] = lambda: None) -> None:
        """Build, for a model about to be swapped in, the masks the serving one has cached;
        ``pause()`` runs between chunks of lookups (``serving.idle_gate``)."""
        for _, version, name, value in list(self._masks):
            if version == self.version:
                self._model_mask(catalogue.model, name, value, pause)

    def _mask(self, catalogue: Catalogue, name: str, value: str) -> np.ndarray:
        model_part = self._model_mask(catalogue.model, name, value)
        if not len(catalogue.new_ids):
            return model_part
        members = self._index.get((name, value), set())
        new_part = np.fromiter((item in members for item in catalogue.new_ids), dtype=bool, count=len(catalogue.new_ids))
        return np.concatenate([model_part, new_part])

    def _model_mask(
        self, model: Model, name: str, value: str, pause: Callable[[], object] = lambda: None
    ) -> np.ndarray:
        """The mask over the model's items, cached per model and catalogue version (the speed view's
        new items change often and are few, so they are matched per request instead)."""

        def build() -> np.ndarray:
            mask = np.zeros(len(model.item_ids), dtype=bool)
            members = self._encoded(name, value, self._index.get((name, value), set()))
            for start in range(0, len(members), LOOKUP_CHUNK):
                pause()
                positions = model.item_positions.lookup(members[start : start + LOOKUP_CHUNK])
                mask[positions[positions >= 0]] = True
            mask.flags.writeable = False  # shared by every request with this filter
            return mask

        return self._cached(self._masks, (model.version, self.version, name, value), build)

    def _cached(self, cache: dict[tuple, np.ndarray], key: tuple, build: Callable[[], np.ndarray]) -> np.ndarray:
        """``cache[key]``, built on a miss; a full cache starts over (filters repeat a lot)."""
        found = cache.get(key)
        if found is None:
            found = build()
            with self._lock:
                if len(cache) >= MASKS_KEPT:
                    cache.clear()
                cache[key] = found
        return found
