"""The speed view's state, one store per ``speed-updates`` kind, and nothing about Kafka.

Every store applies rows so that the result does not depend on arrival order or
repeats: interactions dedupe by event id, features and trending keep the row
with the newest batch per key. That lets serving bootstrap from the Delta speed
tables and then replay the topic over them without double counting.
Callers hold the view's lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Any

from schemas.speed_updates import GLOBAL_SEGMENT, timestamp, timestamp_us

__all__ = ["GLOBAL_SEGMENT", "Interaction", "Interactions", "Profiles", "Trending"]

SWEEP_EVERY_US = 5 * 60_000_000  # how far the trending window moves between sweeps of slid-out minutes


@dataclass(frozen=True)
class Interaction:
    item_id: str
    event_type: str
    weight: float
    occurred_at: str
    event_id: str
    events_version: int | None  # None: seen on the real-time path, not yet known to be in Delta


EVICTED_KEPT = 500_000  # about 40 MB of hashes: minutes of events at thousands per second


class Interactions:
    """Each user's most recent interactions, and who touched each item (for item fold-in)."""

    def __init__(self, recent_items: int):
        self.recent_items = recent_items
        self.users: dict[str, deque[Interaction]] = {}
        self.item_users: dict[str, dict[str, float]] = {}  # item -> user -> summed weight
        self.item_weight: dict[str, float] = {}
        # (hashes of) the ids of the last EVICTED_KEPT events pushed out of their user's recent list: the events
        # query's copy of an event can arrive after its real-time copy left the list (a burst lands a minute
        # later), and must not count it twice
        self._evicted: set[int] = set()
        self._evicted_order: deque[int] = deque()
        self.generation = 0  # bumps on every change; caches of derived state key on it
        self.newest_occurred_at: str | None = None

    def add(self, user_id: str, interaction: Interaction) -> bool:
        """Add an event once per event id; a repeat only fills in the Delta version a first copy lacked."""
        recent = self.users.setdefault(user_id, deque())
        for index, seen in enumerate(recent):
            if seen.event_id == interaction.event_id:
                if seen.events_version is None and interaction.events_version is not None:
                    recent[index] = replace(seen, events_version=interaction.events_version)
                return False
        if hash(interaction.event_id) in self._evicted:
            return False
        if len(recent) == self.recent_items:
            old = recent.popleft()
            self._forget(user_id, old)
            self._remember_evicted(old.event_id)
        recent.append(interaction)
        users = self.item_users.setdefault(interaction.item_id, {})
        users[user_id] = users.get(user_id, 0.0) + interaction.weight
        self.item_weight[interaction.item_id] = self.item_weight.get(interaction.item_id, 0.0) + interaction.weight
        self.generation += 1
        if self.newest_occurred_at is None or interaction.occurred_at > self.newest_occurred_at:
            self.newest_occurred_at = interaction.occurred_at
        return True

    def drop_user(self, user_id: str) -> int:
        """Forget every interaction of ``user_id`` (an erasure); how many there were."""
        recent = self.users.pop(user_id, deque())
        for old in recent:
            users = self.item_users.get(old.item_id, {})
            users.pop(user_id, None)
            if not users:
                self.item_users.pop(old.item_id, None)
            self.item_weight[old.item_id] = self.item_weight.get(old.item_id, 0.0) - old.weight
        self.generation += 1
        return len(recent)

    def _remember_evicted(self, event_id: str) -> None:
        key = hash(event_id)
        self._evicted.add(key)
        self._evicted_order.append(key)
        if len(self._evicted_order) > EVICTED_KEPT:
            self._evicted.discard(self._evicted_order.popleft())

    def _forget(self, user_id: str, old: Interaction) -> None:
        users = self.item_users[old.item_id]
        users[user_id] -= old.weight
        if not any(i.item_id == old.item_id for i in self.users[user_id]):
            del users[user_id]
        if not users:
            del self.item_users[old.item_id]


class Profiles:
    """Each user's newest feature row (segment attributes: country, device)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def add(self, row: dict[str, Any]) -> None:
        user = str(row["user_id"])
        current = self.rows.get(user)
        if current is None or _newer(row, current):
            self.rows[user] = row


class Trending:
    """Items trending per (segment_type, segment) over one sliding window common to every item.

    Rows are an item's count in one minute of one segment (``item_trending``); the
    newest batch per (segment, item, minute) wins. The window is the last
    ``window_s`` ending at the newest minute any row has (the speed layer's
    event-time now), the same boundaries for every item and segment; an item ranks
    by the sum of its minutes in it, and minutes that slid out are dropped.
    """

    def __init__(self, window_s: int) -> None:
        self.window_us = int(window_s) * 1_000_000
        self.end_us: int | None = None  # end of the newest minute seen
        self.segments: dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]] = {}
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
        segment = (str(row["segment_type"]), str(row["segment"]))
        minutes = self.segments.setdefault(segment, {}).setdefault(str(row["item_id"]), {})
        current = minutes.get(minute)
        if current is None or _newer(row, current):
            minutes[minute] = row
            self._ranked.pop(segment, None)

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

    @staticmethod
    def _rank(items: dict[str, dict[int, dict[str, Any]]], start: int) -> list[tuple[str, float]]:
        totals = []
        for item in list(items):
            minutes = items[item]
            for minute in [m for m in minutes if m < start]:
                del minutes[minute]  # slid out: no later window reads it
            if not minutes:
                del items[item]
                continue
            events = sum(int(r["events"] or 0) for r in minutes.values())
            weight = sum(float(r["weight"] or 0) for r in minutes.values())
            if events:
                totals.append((-weight, -events, item))
        totals.sort()
        return [(item, round(-weight, 9)) for weight, _, item in totals]


def _newer(row: dict[str, Any], current: dict[str, Any]) -> bool:
    """Within one query the greater batch id wins; a row from another query (a restarted job) wins."""
    if row.get("query_id") != current.get("query_id"):
        return True
    return int(row.get("batch_id") or 0) >= int(current.get("batch_id") or 0)
