"""The speed view's state, one store per ``speed-updates`` kind, and nothing about Kafka.

Every store applies rows so that the result does not depend on arrival order or
repeats: interactions dedupe by event id, features and trending keep the row
with the newest batch per key. That lets serving bootstrap from the Delta speed
tables and then replay the topic over them without double counting.
Callers hold the view's lock.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any

GLOBAL_SEGMENT = ("global", "*")
TRENDING_WINDOWS_KEPT = 3  # newest windows per segment; older ones no longer rank anything


@dataclass(frozen=True)
class Interaction:
    item_id: str
    event_type: str
    weight: float
    occurred_at: str
    event_id: str
    events_version: int | None  # None: seen on the real-time path, not yet known to be in Delta


class Interactions:
    """Each user's most recent interactions, and who touched each item (for item fold-in)."""

    def __init__(self, recent_items: int):
        self.recent_items = recent_items
        self.users: dict[str, deque[Interaction]] = {}
        self.item_users: dict[str, Counter[str]] = {}
        self.item_weight: Counter[str] = Counter()
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
        if len(recent) == self.recent_items:
            self._forget(user_id, recent.popleft())
        recent.append(interaction)
        self.item_users.setdefault(interaction.item_id, Counter())[user_id] += interaction.weight
        self.item_weight[interaction.item_id] += interaction.weight
        self.generation += 1
        if self.newest_occurred_at is None or interaction.occurred_at > self.newest_occurred_at:
            self.newest_occurred_at = interaction.occurred_at
        return True

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
    """Item counts per (segment_type, segment) and window; the newest batch per key wins."""

    def __init__(self) -> None:
        self.segments: dict[tuple[str, str], dict[str, dict[str, dict[str, Any]]]] = {}
        self._ranked: dict[tuple[str, str], list[tuple[str, float]]] = {}  # newest window, ranked

    def add(self, row: dict[str, Any]) -> None:
        segment = (str(row["segment_type"]), str(row["segment"]))
        windows = self.segments.setdefault(segment, {})
        window = str(row["window_start"])
        if window not in windows and len(windows) >= TRENDING_WINDOWS_KEPT and window < min(windows):
            return  # older than every window kept
        self._ranked.pop(segment, None)
        items = windows.setdefault(window, {})
        current = items.get(str(row["item_id"]))
        if current is None or _newer(row, current):
            items[str(row["item_id"])] = row
        while len(windows) > TRENDING_WINDOWS_KEPT:
            del windows[min(windows)]

    def top(self, segment: tuple[str, str], k: int, exclude: set[str]) -> tuple[list[tuple[str, float]], str | None]:
        """The newest window's items by weight (then events, then id), and that window's start."""
        windows = self.segments.get(segment)
        if not windows:
            return [], None
        window = max(windows)
        ranked = self._ranked.get(segment)
        if ranked is None:
            rows = sorted(
                windows[window].values(),
                key=lambda r: (-float(r["weight"] or 0), -int(r["events"] or 0), str(r["item_id"])),
            )
            ranked = self._ranked[segment] = [(str(r["item_id"]), float(r["weight"] or 0)) for r in rows]
        return [entry for entry in ranked if entry[0] not in exclude][:k], window


def _newer(row: dict[str, Any], current: dict[str, Any]) -> bool:
    """Within one query the greater batch id wins; a row from another query (a restarted job) wins."""
    if row.get("query_id") != current.get("query_id"):
        return True
    return int(row.get("batch_id") or 0) >= int(current.get("batch_id") or 0)
