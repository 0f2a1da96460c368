"""The speed view: what the speed layer saw since the model's snapshot, kept in memory.

On start the view bootstraps from the Delta speed tables (the speed job commits
a batch there before it pushes it), then follows every partition of
``speed-updates`` with ``assign()`` from ``speed_view_replay_s`` before the
bootstrap (no consumer group: each serving process keeps its own position and
its own view). The replay covers what the real-time query sent that was not yet
in Delta. A batch already loaded from a table, a replayed update (same kind,
query, batch and key) and a repeated event id change nothing, so a restart under
steady event flow loses and doubles nothing.

Memory is bounded. A user or item stays for ``speed_view_horizon_s`` after their
newest event, on the view's event-time clock (the newest event it has seen, never
ahead of this host's clock by more than the allowed skew), and at most
``speed_view_max_users`` users holding at most ``speed_view_max_interactions``
interactions, and ``speed_view_max_items`` items, stay: past that the least
recently touched go, one O(1) step each after every update. Trending is
bounded by its window and ``speed_view_max_trending_rows``. Every eviction is
counted (``on_evict``). A user evicted by the cap before a model covers their
interactions is remembered (``EvictedUsers``), and their next request reads them
back from the lake (``serving.views.speed.recall``) before it is answered.
"""

from __future__ import annotations

import heapq
import logging
import sys
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
from serving.views.speed.state import EvictedUsers, Interaction, Interactions, Profiles, Recency, Trending
from serving.views.topic_follower import RETRY_S, TopicFollower

log = logging.getLogger(__name__)

SEEN_UPDATES_KEPT = 100_000  # replay window: far more updates than a speed job re-sends
USER, ITEM, TRENDING = "user", "item", "trending"  # what an eviction drops (the metric's ``entry``)
TTL, CAP = "ttl", "cap"  # why: older than the horizon, or past the cap
UNLANDED = sys.maxsize  # the version an event not yet in Delta needs covered: none yet
__all__ = ["BadUpdate", "SpeedView"]  # BadUpdate: the contract's (schemas.speed_updates)

Evicted = Callable[[str, str, int], None]
"""Hears ``(entry, reason, count)`` for each eviction step: ``entry`` user, item, trending (rows) or
recall_record (an evicted user no longer remembered for a read-back), ``reason`` ttl or cap."""


class SpeedView:
    """Per-user interactions and profiles, per-segment trending, and the view's position."""

    def __init__(self, settings: Settings, on_fresh: Callable[[float], None] | None = None,
                 on_evict: Evicted | None = None):
        """``on_fresh`` hears, for each event the view learns first from the topic, the seconds from
        its acceptance (``received_at``) to now: the platform's freshness. ``on_evict`` hears what the
        horizon and the caps drop."""
        self.settings = settings
        self.on_fresh = on_fresh
        self.on_evict = on_evict
        self._lock = threading.Lock()
        self._interactions = Interactions(settings.speed_recent_items)
        self._profiles = Profiles()
        self._trending = Trending(settings.speed_trending_window_s, settings.speed_view_max_trending_rows)
        self._users = Recency()  # users with interactions or a profile, by their newest event
        self._evicted_users = EvictedUsers(settings.speed_view_recall_users)
        self._horizon_us = settings.speed_view_horizon_s * 1_000_000
        self._clock_us: int | None = None  # the newest event time seen (µs): the view's now
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
            self._evict()
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
            changed = self._add(user, interaction)
            received_at = row.get("received_at")
            if changed and received_at is not None and self.on_fresh is not None:
                self.on_fresh(max(time.time() - timestamp_us(received_at) / 1e6, 0.0))
            if interaction.events_version is not None and (
                    self.events_version is None or interaction.events_version > self.events_version):
                self.events_version = interaction.events_version
            if changed:
                self._evict()
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
            changed = self._apply_rows(kind, rows, events_version, query_id, batch_id)
            self._evict()
            return changed

    def _apply_rows(
        self, kind: str, rows: list[dict[str, Any]], events_version: int | None, query_id: str, batch_id: int
    ) -> int:
        """Apply a batch's decoded rows, stamped with their batch."""
        if kind == KIND_USER_INTERACTIONS:
            parsed = [_interaction(row, events_version) for row in rows]
            return sum(self._add(user, interaction) for user, interaction in parsed
                       if not self._was_erased(user, interaction.occurred_at))
        if kind == KIND_USER_FEATURES:
            for row in rows:
                if not self._was_erased(row["user_id"], row["last_seen"]) and self._profiles.add(
                        {**row, "query_id": query_id, "batch_id": batch_id}):
                    self._touch(row["user_id"], row["last_seen"])
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
            self._evicted_users.settle(user_id)
            return len(self._drop_user(user_id))

    # -- bounds --------------------------------------------------------------------

    def _add(self, user_id: str, interaction: Interaction) -> bool:
        at_us = timestamp_us(interaction.occurred_at)
        changed = self._interactions.add(user_id, interaction, at_us)
        if changed:
            self._touch(user_id, at_us)
        return changed

    def _touch(self, user_id: str, at: str | int | None) -> None:
        """``user_id`` was just heard of, about an event at ``at`` (contract text or µs; None: now)."""
        if at is None:
            at_us = self._clock_us if self._clock_us is not None else 0
        else:
            at_us = at if isinstance(at, int) else timestamp_us(at)
        self._users.touch(user_id, at_us)
        if self._clock_us is None or at_us > self._clock_us:
            self._clock_us = at_us

    def now_us(self) -> int | None:
        """The view's event-time now: the newest event it has seen, but never further ahead of this host's
        clock than the speed layer's allowed skew (a far-future time must not evict everyone)."""
        if self._clock_us is None:
            return None
        return min(self._clock_us, int((time.time() + self.settings.speed_max_clock_skew_s) * 1e6))

    def _evict(self) -> None:
        """Drop, from the least recently touched on, users and items older than the horizon, then any
        past the caps; then trending rows past theirs. Each step is O(1): nothing is scanned."""
        now = self.now_us()
        if now is not None:
            cutoff = now - self._horizon_us
            settings, interactions = self.settings, self._interactions
            self._evict_oldest(self._users, cutoff, USER, self._evict_user, lambda users: (
                users > settings.speed_view_max_users or interactions.count > settings.speed_view_max_interactions))
            self._evict_oldest(interactions.items, cutoff, ITEM, lambda item, _reason: interactions.drop_item(item),
                               lambda items: items > settings.speed_view_max_items)
        cut = self._trending.cut()
        if cut and self.on_evict is not None:
            self.on_evict(TRENDING, CAP, cut)

    def _evict_oldest(self, recency: Recency, cutoff: int, entry: str, drop: Callable[[str, str], object],
                      over_cap: Callable[[int], bool]) -> None:
        """``drop(key, reason)`` the least recently touched keys while older than ``cutoff`` or while
        ``over_cap(keys held)``, and count them."""
        counts = {TTL: 0, CAP: 0}
        newest = recency.newest
        while newest:
            key, at_us = next(iter(newest.items()))
            reason = TTL if at_us < cutoff else CAP if over_cap(len(newest)) else None
            if reason is None:
                break
            drop(key, reason)
            counts[reason] += 1
        if self.on_evict is not None:
            for reason, count in counts.items():
                if count:
                    self.on_evict(entry, reason, count)

    def _evict_user(self, user_id: str, reason: str) -> None:
        dropped = self._drop_user(user_id)
        if reason == CAP and dropped:
            self._remember(user_id, dropped)

    def _drop_user(self, user_id: str) -> list[Interaction]:
        self._users.discard(user_id)
        self._profiles.rows.pop(user_id, None)
        return self._interactions.drop_user(user_id)

    def _remember(self, user_id: str, dropped: list[Interaction]) -> None:
        """Note a user the cap evicted with the events version a model must cover for their next request
        to need no read-back; with an event not yet in Delta, whose version nobody knows yet, any model
        may lack it, and their next request reads back whatever has landed."""
        landed = [i.events_version for i in dropped if i.events_version is not None]
        needs = max(landed, default=-1) if len(landed) == len(dropped) else UNLANDED
        forgotten = self._evicted_users.add(user_id, needs)
        if forgotten and self.on_evict is not None:
            self.on_evict("recall_record", CAP, forgotten)

    def needs_recall(self, user_id: str, covered_version: int | None) -> bool:
        """Whether the cap evicted ``user_id`` with interactions a model trained on events up to
        ``covered_version`` (None: no model) lacks: their request should read them back first."""
        with self._lock:
            return self._evicted_users.needs(user_id, covered_version)

    def recall_cutoff(self) -> str | None:
        """The oldest event time a read-back brings back (the horizon behind the view's now)."""
        with self._lock:
            now = self.now_us()
        return None if now is None else timestamp(now - self._horizon_us)

    def restore(self, user_id: str, rows: list[dict[str, Any]]) -> int:
        """Bring back an evicted user's interactions read from the lake (``speed_user_interactions`` rows
        in message form), the newest ``speed_recent_items`` of them; how many were added."""
        parsed = sorted((_interaction(row, None) for row in decode_rows(KIND_USER_INTERACTIONS, rows)),
                        key=lambda pair: pair[1].occurred_at)[-self.settings.speed_recent_items:]
        with self._lock:
            self._evicted_users.settle(user_id)
            added = sum(self._add(user_id, interaction) for user, interaction in parsed
                        if user == user_id and not self._was_erased(user, interaction.occurred_at))
            self._evict()
        return added

    def sizes(self) -> dict[str, int]:
        """Entries held: users, their interactions, items (with interactions), trending rows, evicted users
        awaiting a read-back."""
        with self._lock:
            return {USER: len(self._users), "interaction": self._interactions.count,
                    ITEM: len(self._interactions.items), TRENDING: self._trending.rows,
                    "recall_record": len(self._evicted_users)}

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

    def item_stamps(self, items: Iterable[str]) -> dict[str, int]:
        """item -> the generation of its last change, for those of ``items`` the view still has."""
        with self._lock:
            stamps = self._interactions.item_stamp
            return {item: stamps[item] for item in items if item in stamps}

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
        item_id=sys.intern(row["item_id"]),  # one copy per item, however many users hold it
        event_type=sys.intern(row["event_type"]),
        weight=row["weight"],
        occurred_at=row["occurred_at"],
        event_id=row["event_id"],
        events_version=None if version is None else int(version),
    )
