"""The speed view's state, one store per ``speed-updates`` kind, and nothing about Kafka.

Every store applies rows so that the result does not depend on arrival order or
repeats: interactions dedupe by event id, features and trending keep the row
with the newest batch per key. That lets serving bootstrap from the Delta speed
tables and then replay the topic over them without double counting.

Every store is bounded: users and items by the view's horizon and caps
(``Recency``: the least recently touched go first, in O(1) each), trending by the
window and a cap on its rows. Callers hold the view's lock.
"""

from __future__ import annotations

import sys
from collections import OrderedDict, deque
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from schemas.speed_updates import GLOBAL_SEGMENT, timestamp, timestamp_us

__all__ = ["GLOBAL_SEGMENT", "EvictedUsers", "Generation", "Interaction", "Interactions", "Profiles", "Recency",
           "Trending"]

SWEEP_EVERY_US = 5 * 60_000_000  # how far the trending window moves between sweeps of slid-out minutes
TRENDING_KEPT_AFTER_CAP = 0.9  # a trending cut leaves this share of the cap, so cuts come once per 10% of it


@dataclass(frozen=True, slots=True)
class Interaction:
    item_id: str
    event_type: str
    weight: float
    occurred_at: str
    event_id: str
    events_version: int | None  # None: seen on the real-time path, not yet known to be in Delta


EVICTED_KEPT = 500_000  # about 40 MB of hashes: minutes of events at thousands per second


class Recency:
    """Keys in the order they were last touched, each with the newest event time (µs) seen for it.

    The least recently touched key is first, so the view's horizon and cap evict
    from the front, one O(1) step per key, with no scan.
    """

    def __init__(self) -> None:
        self.newest: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self.newest)

    def __contains__(self, key: object) -> bool:
        return key in self.newest

    def touch(self, key: str, at_us: int) -> None:
        newest = self.newest.get(key)
        self.newest[key] = at_us if newest is None or at_us > newest else newest
        self.newest.move_to_end(key)

    def oldest(self) -> tuple[str, int] | None:
        """The least recently touched key and its newest event time."""
        return next(iter(self.newest.items()), None)

    def discard(self, key: str) -> None:
        self.newest.pop(key, None)


class Interactions:
    """Each user's most recent interactions, and who touched each item (for item fold-in)."""

    def __init__(self, recent_items: int):
        self.recent_items = recent_items
        self.users: dict[str, list[Interaction]] = {}  # oldest first; a list: a deque costs 600 bytes a user
        self.item_users: dict[str, dict[str, float]] = {}  # item -> user -> summed weight
        self.item_weight: dict[str, float] = {}
        self.item_stamp: dict[str, int] = {}  # item -> generation of its last change (catalogue refits)
        self.items = Recency()  # items with users, by their newest interaction
        self.count = 0  # interactions held
        # (hashes of) the ids of the last EVICTED_KEPT events pushed out of their user's recent list: the events
        # query's copy of an event can arrive after its real-time copy left the list (a burst lands a minute
        # later), and must not count it twice
        self._evicted: set[int] = set()
        self._evicted_order: deque[int] = deque()
        self.generation = 0  # bumps on every change; caches of derived state key on it
        self.newest_occurred_at: str | None = None

    def add(self, user_id: str, interaction: Interaction, at_us: int) -> bool:
        """Add an event once per event id; a repeat only fills in the Delta version a first copy lacked.
        ``at_us`` is its time (µs), which keeps its item in the view."""
        recent = self.users.setdefault(user_id, [])
        for index, seen in enumerate(recent):
            if seen.event_id == interaction.event_id:
                if seen.events_version is None and interaction.events_version is not None:
                    recent[index] = replace(seen, events_version=interaction.events_version)
                return False
        if hash(interaction.event_id) in self._evicted:
            return False
        self.generation += 1
        if len(recent) == self.recent_items:
            old = recent.pop(0)
            self._unweigh(user_id, old, still_has=any(i.item_id == old.item_id for i in recent))
            self._remember_evicted(old.event_id)
            self.count -= 1
        recent.append(interaction)
        self.count += 1
        item = interaction.item_id
        users = self.item_users.setdefault(item, {})
        users[user_id] = users.get(user_id, 0.0) + interaction.weight
        self.item_weight[item] = self.item_weight.get(item, 0.0) + interaction.weight
        self.item_stamp[item] = self.generation
        self.items.touch(item, at_us)
        if self.newest_occurred_at is None or interaction.occurred_at > self.newest_occurred_at:
            self.newest_occurred_at = interaction.occurred_at
        return True

    def drop_user(self, user_id: str) -> list[Interaction]:
        """Forget every interaction of ``user_id`` (an erasure or an eviction); returns them."""
        recent = self.users.pop(user_id, [])
        if recent:
            self.generation += 1
            self.count -= len(recent)
        for old in recent:
            self._unweigh(user_id, old, still_has=False)
        return recent

    def drop_item(self, item_id: str) -> None:
        """Stop folding ``item_id`` in (an eviction): its users keep it in their history."""
        self.generation += 1
        for store in (self.item_users, self.item_weight, self.item_stamp):
            store.pop(item_id, None)
        self.items.discard(item_id)

    def _remember_evicted(self, event_id: str) -> None:
        key = hash(event_id)
        self._evicted.add(key)
        self._evicted_order.append(key)
        if len(self._evicted_order) > EVICTED_KEPT:
            self._evicted.discard(self._evicted_order.popleft())

    def _unweigh(self, user_id: str, old: Interaction, still_has: bool) -> None:
        """Take ``old``'s weight off its item (an item evicted earlier has none to take)."""
        users = self.item_users.get(old.item_id)
        if users is None:
            return
        if still_has:
            users[user_id] = users.get(user_id, 0.0) - old.weight
        else:
            users.pop(user_id, None)
        if not users:
            self.drop_item(old.item_id)
            return
        self.item_weight[old.item_id] -= old.weight
        self.item_stamp[old.item_id] = self.generation


class Profiles:
    """Each user's newest feature row, as much of it as serving reads: their segment (country, device),
    their day's category affinities, when they were last seen, and the batch it came from."""

    FIELDS = ("last_seen", "country", "device", "categories_24h", "query_id", "batch_id")

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def add(self, row: dict[str, Any]) -> bool:
        """Keep ``row`` if it is the user's newest; whether it was."""
        user = str(row["user_id"])
        current = self.rows.get(user)
        if current is None or _newer(row, current):
            kept = {name: row[name] for name in self.FIELDS if row.get(name) is not None}
            for name in ("country", "device"):  # a few values shared by many users
                if name in kept:
                    kept[name] = sys.intern(str(kept[name]))
            self.rows[user] = kept
            return True
        return False


class EvictedUsers:
    """Users the view evicted while no model may cover their interactions yet, to be read back from the
    lake on their next request (``serving.views.speed.recall``).

    Compact, so that a flood of distinct users cannot outgrow it: users go into Bloom
    filters (``Generation``) of a quarter of ``cap`` users each, about 1.6 bytes a user at a 1%
    false-positive rate over them all (a false positive costs one needless read). Each generation keeps
    the highest events version a model must have trained on to cover its users; it goes
    once the serving model covers that, or, past ``cap`` users in all, the oldest goes
    (its users are then answered from the model alone until a model covers them). Users
    read back or erased since their eviction are known exactly until evicted again.
    """

    GENERATIONS = 4

    def __init__(self, cap: int):
        self.cap = cap
        self.per_generation = max(1, cap // self.GENERATIONS)
        self._generations: deque[Generation] = deque()
        self._settled: OrderedDict[int, None] = OrderedDict()  # read back or erased since their eviction

    def __len__(self) -> int:
        return sum(generation.users for generation in self._generations)

    def add(self, user_id: str, needs_version: int) -> int:
        """Remember ``user_id``; how many users older generations took with them past the cap."""
        key = _key(user_id)
        self._settled.pop(key, None)
        if not self._generations or self._generations[-1].users >= self.per_generation:
            self._generations.append(Generation(self.per_generation))
        self._generations[-1].add(key, needs_version)
        dropped = 0
        while len(self) > self.cap:
            dropped += self._generations.popleft().users
        return dropped

    def needs(self, user_id: str, covered_version: int | None) -> bool:
        """Whether ``user_id`` may have been evicted with interactions a model trained on events up to
        ``covered_version`` (None: no model) lacks. Generations that model covers are let go."""
        if covered_version is not None:
            while self._generations and self._generations[0].needs <= covered_version \
                    and self._generations[0] is not self._generations[-1]:
                self._generations.popleft()
        key = _key(user_id)
        return key not in self._settled and any(
            (covered_version is None or generation.needs > covered_version) and key in generation
            for generation in self._generations)

    def settle(self, user_id: str) -> None:
        """``user_id`` was read back (or erased): no read for them until they are evicted again."""
        self._settled[_key(user_id)] = None
        while len(self._settled) > self.per_generation:
            self._settled.popitem(last=False)


class Generation:
    """A Bloom filter of users (0.25% false positives at ``capacity``, so 1% over the record's four) and
    the version that covers them."""

    HASHES = 9  # -log2(0.0025)

    def __init__(self, capacity: int):
        self.size = max(64, int(capacity * 12.5))  # bits: -ln(0.0025) / ln(2)^2 per user
        self.bits = bytearray((self.size + 7) // 8)
        self.users = 0
        self.needs = -1

    def add(self, key: int, needs_version: int) -> None:
        for position in self._positions(key):
            self.bits[position >> 3] |= 1 << (position & 7)
        self.users += 1
        self.needs = max(self.needs, needs_version)

    def __contains__(self, key: int) -> bool:
        return all(self.bits[position >> 3] & (1 << (position & 7)) for position in self._positions(key))

    def _positions(self, key: int) -> list[int]:
        low, high = key & 0xFFFFFFFF, (key >> 32) | 1  # double hashing: k positions from one 64-bit hash
        return [(low + n * high) % self.size for n in range(self.HASHES)]


def _key(user_id: str) -> int:
    return hash(user_id) & 0xFFFFFFFFFFFFFFFF


class Minute(NamedTuple):
    """An item's count in one minute of one segment, from one batch of one query."""

    events: int
    weight: float
    query_id: str | None
    batch_id: int


class Trending:
    """Items trending per (segment_type, segment) over one sliding window common to every item.

    Rows are an item's count in one minute of one segment (``item_trending``); the
    newest batch per (segment, item, minute) wins. The window is the last
    ``window_s`` ending at the newest minute any row has (the speed layer's
    event-time now), the same boundaries for every item and segment; an item ranks
    by the sum of its minutes in it, and minutes that slid out are dropped.
    Past ``max_rows`` (segment, item, minute) rows, the items that weigh least in
    their segment go until a tenth of the cap is free (``cut``).
    """

    def __init__(self, window_s: int, max_rows: int | None = None) -> None:
        self.window_us = int(window_s) * 1_000_000
        self.max_rows = max_rows
        self.rows = 0  # (segment, item, minute) rows held
        self.end_us: int | None = None  # end of the newest minute seen
        self.segments: dict[tuple[str, str], dict[str, dict[int, Minute]]] = {}
        self._ranked: dict[tuple[str, str], list[tuple[str, float]]] = {}  # for the current end
        self._ranked_end: int | None = None
        self._pruned_start: int | None = None  # window start of the last sweep over every segment

    def start_us(self) -> int | None:
        return None if self.end_us is None else self.end_us - self.window_us

    def add(self, row: dict[str, Any]) -> None:
        minute, end = timestamp_us(row["window_start"]), timestamp_us(row["window_end"])
        if self.end_us is None or end > self.end_us:
            self.end_us = end
            self._sweep(end)
        if minute < self.end_us - self.window_us:
            return  # slid out of the window already
        segment = (sys.intern(str(row["segment_type"])), sys.intern(str(row["segment"])))
        minutes = self.segments.setdefault(segment, {}).setdefault(sys.intern(str(row["item_id"])), {})
        count = Minute(int(row["events"] or 0), float(row["weight"] or 0), row.get("query_id"),
                       int(row.get("batch_id") or 0))
        current = minutes.get(minute)
        if current is None or _newer_batch(count.query_id, count.batch_id, current.query_id, current.batch_id):
            self.rows += current is None
            minutes[minute] = count
            self._ranked.pop(segment, None)

    def cut(self) -> int:
        """Drop, past ``max_rows``, the least weighty (segment, item)s' rows; how many rows went."""
        if self.max_rows is None or self.rows <= self.max_rows:
            return 0
        weights = sorted((sum(m.weight for m in minutes.values()), segment, item)
                         for segment, items in self.segments.items() for item, minutes in items.items())
        excess, dropped = self.rows - int(self.max_rows * TRENDING_KEPT_AFTER_CAP), 0
        for _, segment, item in weights:
            if dropped >= excess:
                break
            items = self.segments[segment]
            dropped += len(items.pop(item))
            if not items:
                del self.segments[segment]
        self.rows -= dropped
        self._ranked = {}
        return dropped

    def top(self, segment: tuple[str, str], k: int,
            exclude: AbstractSet[str]) -> tuple[list[tuple[str, float]], str | None]:
        """The segment's items by weight (then events, then id) in the window, and the window's start."""
        items = self.segments.get(segment)
        if not items or self.end_us is None:
            return [], None
        if self._ranked_end != self.end_us:
            self._ranked, self._ranked_end = {}, self.end_us
        ranked = self._ranked.get(segment)
        if ranked is None:
            ranked = self._ranked[segment] = self._rank(items, self.end_us - self.window_us)
        if not ranked:
            return [], None
        return [entry for entry in ranked if entry[0] not in exclude][:k], timestamp(self.end_us - self.window_us)

    def _sweep(self, end_us: int) -> None:
        """Drop the minutes that slid out, in every segment (ranked or not), every few minutes."""
        start = end_us - self.window_us
        if self._pruned_start is not None and start - self._pruned_start < SWEEP_EVERY_US:
            return
        self._pruned_start = start
        for segment, items in list(self.segments.items()):
            self._rank(items, start)
            if not items:
                del self.segments[segment]
        self._ranked = {}

    def _rank(self, items: dict[str, dict[int, Minute]], start: int) -> list[tuple[str, float]]:
        totals = []
        for item in list(items):
            minutes = items[item]
            for minute in [m for m in minutes if m < start]:
                del minutes[minute]  # slid out: no later window reads it
                self.rows -= 1
            if not minutes:
                del items[item]
                continue
            events = sum(m.events for m in minutes.values())
            weight = sum(m.weight for m in minutes.values())
            if events:
                totals.append((-weight, -events, item))
        totals.sort()
        return [(item, round(-weight, 9)) for weight, _, item in totals]


def _newer(row: dict[str, Any], current: dict[str, Any]) -> bool:
    return _newer_batch(row.get("query_id"), int(row.get("batch_id") or 0),
                        current.get("query_id"), int(current.get("batch_id") or 0))


def _newer_batch(query_id: str | None, batch_id: int, current_query_id: str | None, current_batch_id: int) -> bool:
    """Within one query the greater batch id wins; a row from another query (a restarted job) wins."""
    return query_id != current_query_id or batch_id >= current_batch_id
