"""The speed view: what the speed layer saw since the model's snapshot, kept in memory.

On start the view bootstraps from the Delta speed tables (the speed job commits
a batch there before it pushes it), then follows every partition of
``speed-updates`` with ``assign()`` from ``speed_view_replay_s`` before the
bootstrap (no consumer group: each serving process keeps its own position and
its own view). The replay covers what the real-time query sent that was not yet
in Delta. A batch already loaded from a table, a replayed update (same kind,
query, batch and key) and a repeated event id change nothing, so a restart under
steady event flow loses and doubles nothing.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
import datetime as dt
from typing import Any

from lambdarec.settings import Settings
from schemas.speed_updates import (
    GLOBAL_SEGMENT,
    KIND_INTERACTION,
    KIND_ITEM_TRENDING,
    KIND_PROGRESS,
    KIND_USER_FEATURES,
    KIND_USER_INTERACTIONS,
    BadUpdate,
    decode,
    decode_rows,
    timestamp,
    timestamp_us,
)
from serving.speed_state import Interaction, Interactions, Profiles, Trending
from serving.topic_follower import RETRY_S, TopicFollower

log = logging.getLogger(__name__)

SEEN_UPDATES_KEPT = 100_000  # replay window: far more updates than a speed job re-sends
__all__ = ["BadUpdate", "SpeedView"]  # BadUpdate: the contract's (schemas.speed_updates)


class SpeedView:
    """Per-user interactions and profiles, per-segment trending, and the view's position."""

    def __init__(self, settings: Settings, on_fresh: Callable[[float], None] | None = None):
        """``on_fresh`` hears, for each event the view learns first from the topic, the seconds from
        its acceptance (``received_at``) to now: the platform's freshness."""
        self.settings = settings
        self.on_fresh = on_fresh
        self._lock = threading.Lock()
        self._interactions = Interactions(settings.speed_recent_items)
        self._profiles = Profiles()
        self._trending = Trending(settings.speed_trending_window_s)
        self._progress: dict[str, Any] | None = None
        self._seen_updates: OrderedDict[tuple, None] = OrderedDict()
        self._bootstrapped: set[tuple[str, str, int]] = set()  # (kind, query_id, batch_id) from tables
        self._erased: dict[str, int] = {}  # user -> request time (µs): their events until then are gone
        self._withheld: frozenset[str] = frozenset()  # users without personalisation consent
        self.bootstrap_versions: dict[str, int] | None = None  # table -> Delta version loaded
        self.events_version: int | None = None
        self.batch_id: int | None = None
        self.last_update_at: float | None = None
        self.bad_records = 0
        self._follower = TopicFollower(settings.bootstrap_servers, settings.topic_speed_updates,
                                       "lambdarec-serving-speed-view", settings.speed_view_replay_s,
                                       self._apply_record)

    # -- applying updates ----------------------------------------------------------

    def apply(self, update: bytes | str | dict[str, Any], key: bytes | None = None) -> int:
        """Apply one update (the record's bytes, or its decoded JSON); returns how many rows changed
        the view. It is checked by the contract's decoder (``BadUpdate`` if malformed); kinds the
        contract does not know are ignored."""
        message = decode(update)
        if message is None:
            return 0
        kind = message["kind"]
        if kind == KIND_INTERACTION:
            return self._apply_interaction(message)
        query_id, batch_id = message["query_id"], message["batch_id"]
        rows = [message["progress"]] if kind == KIND_PROGRESS else message["rows"]
        events_version = message.get("events_version")
        with self._lock:
            update_id = (kind, query_id, batch_id, key)
            if update_id in self._seen_updates or (kind, query_id, batch_id) in self._bootstrapped:
                return 0
            self._seen_updates[update_id] = None
            if len(self._seen_updates) > SEEN_UPDATES_KEPT:
                self._seen_updates.popitem(last=False)
            changed = self._apply_rows(kind, rows, events_version, query_id, batch_id)
            if events_version is not None and (self.events_version is None or events_version >= self.events_version):
                self.events_version, self.batch_id = events_version, batch_id
            self.last_update_at = time.time()
        return changed

    def _apply_interaction(self, row: dict[str, Any]) -> int:
        """One event from the real-time query (no version yet) or the events query (with its version).

        The first copy of an event id counts; a later copy only adds the version
        the event landed in, so a repeat from the at-least-once path changes nothing.
        """
        user, interaction = _interaction(row, row.get("events_version"))
        with self._lock:
            if self._was_erased(user, interaction.occurred_at):
                return 0
            if interaction.events_version is None and user in self._withheld:
                return 0  # the real-time query does not know consent; the events query drops these
            changed = self._interactions.add(user, interaction)
            received_at = row.get("received_at")
            if changed and received_at is not None and self.on_fresh is not None:
                self.on_fresh(max(time.time() - timestamp_us(received_at) / 1e6, 0.0))
            if interaction.events_version is not None and (
                    self.events_version is None or interaction.events_version > self.events_version):
                self.events_version = interaction.events_version
            self.last_update_at = time.time()
        return int(changed)

    def load_batch(self, kind: str, query_id: str, batch_id: int, rows: list[dict[str, Any]]) -> int:
        """Apply one batch read from its Delta table (rows in message form, ``schemas.speed_updates.row``);
        the same batch on the topic is then skipped."""
        rows = [rows[0]] if kind == KIND_PROGRESS else decode_rows(kind, rows)
        with self._lock:
            self._bootstrapped.add((kind, query_id, batch_id))
            events_version = None
            if kind == KIND_USER_INTERACTIONS and rows:
                events_version = max(int(row["events_version"]) for row in rows)
                if self.events_version is None or events_version >= self.events_version:
                    self.events_version, self.batch_id = events_version, batch_id
            return self._apply_rows(kind, rows, events_version, query_id, batch_id)

    def _apply_rows(
        self, kind: str, rows: list[dict[str, Any]], events_version: int | None, query_id: str, batch_id: int
    ) -> int:
        """Apply a batch's decoded rows, stamped with their batch."""
        if kind == KIND_USER_INTERACTIONS:
            parsed = [_interaction(row, events_version) for row in rows]
            return sum(self._interactions.add(user, interaction) for user, interaction in parsed
                       if not self._was_erased(user, interaction.occurred_at))
        if kind == KIND_USER_FEATURES:
            for row in rows:
                if not self._was_erased(row["user_id"], row["last_seen"]):
                    self._profiles.add({**row, "query_id": query_id, "batch_id": batch_id})
        elif kind == KIND_ITEM_TRENDING:
            for row in rows:
                self._trending.add({**row, "query_id": query_id, "batch_id": batch_id})
        elif kind == KIND_PROGRESS:
            self._progress = rows[0]
        return len(rows)

    def forget(self, user_id: str, requested_at: dt.datetime) -> int:
        """Drop the user's interactions and profile at once (an erasure), and from now on ignore
        updates about them up to ``requested_at``: the speed job may still be storing them. Later
        events are the user's new life. Returns the interactions dropped."""
        with self._lock:
            self._erased[user_id] = max(self._erased.get(user_id, 0), timestamp_us(timestamp(requested_at)))
            self._profiles.rows.pop(user_id, None)
            return self._interactions.drop_user(user_id)

    def withhold(self, users: frozenset[str]) -> None:
        """From now on, ignore real-time interactions of ``users`` (they withdrew consent): the events
        query drops their events, so the only copies that reach serving are the real-time query's."""
        self._withheld = users

    def _was_erased(self, user_id: str, at: str | None) -> bool:
        before = self._erased.get(user_id)
        return before is not None and (at is None or timestamp_us(at) <= before)

    # -- reading -------------------------------------------------------------------

    def interactions(self, user_id: str) -> list[Interaction]:
        with self._lock:
            return list(self._interactions.users.get(user_id, ()))

    def item_ids(self) -> tuple[int, list[str]]:
        """(generation, every item the view has interactions with)."""
        with self._lock:
            return self._interactions.generation, list(self._interactions.item_users)

    def item_users(self, items: Iterable[str]) -> dict[str, dict[str, float]]:
        """item -> user -> summed weight, for those of ``items`` the view still has."""
        with self._lock:
            source = self._interactions.item_users
            return {item: dict(source[item]) for item in items if item in source}

    @property
    def generation(self) -> int:
        return self._interactions.generation

    def profile(self, user_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._profiles.rows.get(user_id)

    def trending(
        self, segment: tuple[str, str] = GLOBAL_SEGMENT, k: int = 10, exclude: AbstractSet[str] = frozenset()
    ) -> tuple[list[tuple[str, float]], str | None]:
        """A segment's trending items and the window they come from ([] if the segment has none)."""
        with self._lock:
            return self._trending.top(segment, k, exclude)

    def popular(self, k: int, exclude: AbstractSet[str] = frozenset()) -> list[tuple[str, float]]:
        """The items with the most speed-view weight, for serving before any model exists."""
        with self._lock:
            ranked = heapq.nlargest(k + len(exclude), self._interactions.item_weight.items(), key=lambda kv: kv[1])
        return [(item, weight) for item, weight in ranked if item not in exclude][:k]

    def position(self) -> dict[str, Any]:
        """Where the view stands: offsets consumed, latest batch, and how stale it is."""
        offsets, lag = self._follower.position()
        with self._lock:
            progress = self._progress
            newest = self._interactions.newest_occurred_at
        age_ms = None if self.last_update_at is None else round((time.time() - self.last_update_at) * 1000)
        return {
            "following": self.following,
            "bootstrapped": self.bootstrap_versions is not None,
            "events_version": self.events_version,
            "batch_id": self.batch_id,
            "offsets": {str(p): o for p, o in sorted(offsets.items())},
            "lag_records": lag if self.following else None,
            "age_ms": age_ms,
            "newest_event_at": newest,
            "speed_job_lag_records": None if progress is None else progress.get("source_lag"),
        }

    # -- following the topic -------------------------------------------------------

    @property
    def following(self) -> bool:
        return self._follower.following

    def start(self, bootstrap=None) -> None:
        """Follow the topic in a daemon thread, after ``bootstrap(view)`` succeeded (if given)."""
        self._follower.start(before=lambda stop: self._bootstrap(bootstrap, stop))

    def stop(self) -> None:
        self._follower.stop()

    def _bootstrap(self, bootstrap, stop: threading.Event) -> None:
        delay = RETRY_S[0]
        while bootstrap is not None and self.bootstrap_versions is None and not stop.is_set():
            try:
                self.bootstrap_versions = bootstrap(self)
            except Exception as exc:  # a lake that is not there yet: retry, never serve half a view
                log.warning("speed view bootstrap failed; retrying", extra={"error": repr(exc)})
                stop.wait(delay)
                delay = min(delay * 2, RETRY_S[1])
        if bootstrap is None:
            self.bootstrap_versions = {}

    def _apply_record(self, record) -> None:
        try:
            self.apply(record.value, record.key)
        except BadUpdate as exc:
            self.bad_records += 1
            log.warning(
                "skipped a bad speed update",
                extra={"partition": record.partition, "offset": record.offset, "error": str(exc)},
            )


def _interaction(row: dict[str, Any], events_version: int | None) -> tuple[str, Interaction]:
    """A decoded interaction row; its own ``events_version`` wins over its batch's."""
    version = row.get("events_version")
    version = events_version if version is None else version
    return row["user_id"], Interaction(
        item_id=row["item_id"],
        event_type=row["event_type"],
        weight=row["weight"],
        occurred_at=row["occurred_at"],
        event_id=row["event_id"],
        events_version=None if version is None else int(version),
    )
