"""The speed view: each user's most recent interactions, from the ``speed-updates`` topic.

A daemon thread follows every partition of the topic from the beginning with
``assign()`` (no consumer group: Tansu has none, and serving keeps its own
position). A replayed update (same query, batch and key) and a repeated event id
are ignored, so a speed job that re-sends after a crash changes nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from lambdarec.kafka_io import make_consumer
from lambdarec.settings import Settings
from schemas.topics import SPEED_UPDATE_KIND_USER_INTERACTIONS

log = logging.getLogger(__name__)

SEEN_UPDATES_KEPT = 100_000  # replay window: far more updates than a speed job re-sends
RETRY_S = (0.5, 5.0)  # first and longest wait between reconnects; doubles while failing


class BadUpdate(ValueError):
    """A speed-updates record that is not a well-formed update."""


@dataclass(frozen=True)
class Interaction:
    item_id: str
    event_type: str
    weight: float
    occurred_at: str
    event_id: str
    events_version: int


class SpeedView:
    """Per-user recent interactions plus the view's position in the topic."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._users: dict[str, deque[Interaction]] = {}
        self._item_weight: Counter[str] = Counter()
        self._seen_updates: OrderedDict[tuple, None] = OrderedDict()
        self._offsets: dict[int, int] = {}
        self._highwater: dict[int, int] = {}
        self.events_version: int | None = None
        self.batch_id: int | None = None
        self.last_update_at: float | None = None
        self.following = False
        self.bad_records = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- applying updates ----------------------------------------------------------

    def apply(self, update: dict[str, Any], key: bytes | None = None) -> int:
        """Apply one decoded update; returns how many new interactions it added."""
        if not isinstance(update, dict):
            raise BadUpdate("a speed update must be a JSON object")
        if update.get("kind") != SPEED_UPDATE_KIND_USER_INTERACTIONS:
            return 0
        try:
            update_id = (str(update["query_id"]), int(update["batch_id"]), key)
            events_version = int(update["events_version"])
            rows = [_interaction(row, events_version) for row in update["rows"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise BadUpdate(f"malformed {SPEED_UPDATE_KIND_USER_INTERACTIONS} update: {exc!r}") from exc
        added = 0
        with self._lock:
            if update_id in self._seen_updates:
                return 0
            self._seen_updates[update_id] = None
            if len(self._seen_updates) > SEEN_UPDATES_KEPT:
                self._seen_updates.popitem(last=False)
            for user_id, interaction in rows:
                recent = self._users.setdefault(user_id, deque(maxlen=self.settings.speed_recent_items))
                if any(seen.event_id == interaction.event_id for seen in recent):
                    continue
                recent.append(interaction)
                self._item_weight[interaction.item_id] += interaction.weight
                added += 1
            if self.events_version is None or events_version >= self.events_version:
                self.events_version, self.batch_id = events_version, update_id[1]
            self.last_update_at = time.time()
        return added

    # -- reading -------------------------------------------------------------------

    def interactions(self, user_id: str) -> list[Interaction]:
        with self._lock:
            return list(self._users.get(user_id, ()))

    def popular(self, k: int, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
        """The items with the most speed-view weight, for serving before any model exists."""
        with self._lock:
            ranked = self._item_weight.most_common(k + len(exclude))
        return [(item, weight) for item, weight in ranked if item not in exclude][:k]

    def position(self) -> dict[str, Any]:
        """Where the view stands: offsets consumed, latest batch, and how stale it is."""
        with self._lock:
            offsets = dict(self._offsets)
            lag = sum(max(self._highwater.get(p, o) - o, 0) for p, o in offsets.items())
        age_ms = None if self.last_update_at is None else round((time.time() - self.last_update_at) * 1000)
        return {
            "following": self.following,
            "events_version": self.events_version,
            "batch_id": self.batch_id,
            "offsets": {str(p): o for p, o in sorted(offsets.items())},
            "lag_records": lag if self.following else None,
            "age_ms": age_ms,
        }

    # -- following the topic -------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="speed-view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _follow(self) -> None:
        delay = RETRY_S[0]
        while not self._stop.is_set():
            consumer = None
            try:
                # earliest: a memory-only broker that restarted starts its offsets again at 0
                consumer = make_consumer(
                    self.settings.bootstrap_servers,
                    client_id="lambdarec-serving-speed-view",
                    auto_offset_reset="earliest",
                    bootstrap_timeout_ms=5000,
                )
                if self._assign(consumer):
                    delay = RETRY_S[0]
                    self._poll_until_stopped(consumer)
            except Exception as exc:  # keep following whatever the broker does
                log.warning("speed view lost the broker; retrying", extra={"error": repr(exc)})
            finally:
                self.following = False
                if consumer is not None:
                    consumer.close()
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_S[1])

    def _assign(self, consumer: KafkaConsumer) -> bool:
        """Assign every partition at our position (or the beginning); False if no topic yet."""
        topic = self.settings.topic_speed_updates
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            log.info("speed view waiting for topic", extra={"topic": topic})
            return False
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        with self._lock:
            for tp in assigned:
                self._offsets.setdefault(tp.partition, 0)
                consumer.seek(tp, self._offsets[tp.partition])
        self.following = True
        log.info("speed view following", extra={"topic": topic, "partitions": sorted(partitions)})
        return True

    def _poll_until_stopped(self, consumer: KafkaConsumer) -> None:
        while not self._stop.is_set():
            batches = consumer.poll(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    self._apply_record(record)
                    with self._lock:
                        self._offsets[tp.partition] = record.offset + 1
            with self._lock:
                for tp in consumer.assignment():
                    highwater = consumer.highwater(tp)
                    if highwater is not None:
                        self._highwater[tp.partition] = highwater

    def _apply_record(self, record) -> None:
        try:
            self.apply(json.loads(record.value), record.key)
        except (ValueError, TypeError) as exc:  # BadUpdate and JSON errors are ValueErrors
            self.bad_records += 1
            log.warning(
                "skipped a bad speed update",
                extra={"partition": record.partition, "offset": record.offset, "error": str(exc)},
            )


def _interaction(row: dict[str, Any], events_version: int) -> tuple[str, Interaction]:
    return str(row["user_id"]), Interaction(
        item_id=str(row["item_id"]),
        event_type=str(row["event_type"]),
        weight=float(row["weight"]),
        occurred_at=str(row["occurred_at"]),
        event_id=str(row["event_id"]),
        events_version=events_version,
    )
