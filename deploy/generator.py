"""Synthetic events with a planted latent structure, so a model's quality can be checked.

Users and items are each drawn into one of ``n_clusters`` clusters. An event's item
comes from the user's own cluster with probability ``affinity`` and from the whole
catalogue otherwise; within a cluster, item popularity follows a power law. A
recommender that finds the clusters beats a popularity baseline; one that does not,
does not. Everything is drawn from one seed, so the same call gives the same events
(timestamps are placed relative to ``end``: pass it too for byte-identical output).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lambdarec.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

EVENT_TYPE_SHARES = {
    "view": 0.62,
    "click": 0.18,
    "add_to_cart": 0.06,
    "like": 0.05,
    "rating": 0.04,
    "share": 0.02,
    "purchase": 0.03,
}
DEVICES = ("mobile", "desktop", "tablet")
DEVICE_SHARES = (0.6, 0.33, 0.07)
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "ES")
DEFAULT_DAYS = 7.0  # the span of generated history, when nothing bounds it


def user_id(index: int) -> str:
    return f"user-{index}"


def item_id(index: int) -> str:
    return f"item-{index}"


def _parse_index(raw: str, prefix: str, size: int) -> int:
    head, _, number = raw.partition("-")
    if head != prefix or not number.isdigit() or int(number) >= size:
        raise ValueError(f"{raw!r} is not a valid {prefix} id here ({prefix}-0 .. {prefix}-{size - 1})")
    return int(number)


@dataclass(frozen=True)
class World:
    """The planted ground truth: cluster of every user and item, and item popularity."""

    n_users: int
    n_items: int
    n_clusters: int
    seed: int
    zipf_exponent: float = 1.1
    _users: np.ndarray = field(init=False, repr=False)
    _items: np.ndarray = field(init=False, repr=False)
    _popularity: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if min(self.n_users, self.n_items, self.n_clusters) < 1:
            raise ValueError("n_users, n_items and n_clusters must all be at least 1")
        if self.n_clusters > self.n_items:
            raise ValueError(f"n_clusters ({self.n_clusters}) cannot exceed n_items ({self.n_items})")
        rng = np.random.default_rng([self.seed, 0])
        users = rng.integers(0, self.n_clusters, self.n_users)
        # Balanced item clusters, so every cluster has items to offer.
        items = rng.permutation(np.arange(self.n_items) % self.n_clusters)
        popularity = np.empty(self.n_items)
        for cluster in range(self.n_clusters):
            members = np.flatnonzero(items == cluster)
            ranks = rng.permutation(len(members)) + 1
            popularity[members] = ranks ** -self.zipf_exponent
        object.__setattr__(self, "_users", users)
        object.__setattr__(self, "_items", items)
        object.__setattr__(self, "_popularity", popularity)

    def user_cluster(self, user: str) -> int:
        """Ground-truth cluster of a raw user id such as ``user-17``."""
        return int(self._users[_parse_index(user, "user", self.n_users)])

    def item_cluster(self, item: str) -> int:
        """Ground-truth cluster of an item id such as ``item-203``."""
        return int(self._items[_parse_index(item, "item", self.n_items)])

    def interactions(self, n: int, affinity: float = 0.85) -> tuple[np.ndarray, np.ndarray]:
        """(user indices, item indices) of ``n`` events, the same draws ``events`` makes, without the dicts.

        For benchmarks at millions of rows, where building event dicts would dominate.
        """
        if not 0.0 <= affinity <= 1.0:
            raise ValueError(f"affinity must be within [0, 1], got {affinity}")
        users, items, _ = self._draw(np.random.default_rng([self.seed, 1]), n, affinity)
        return users, items

    def _draw(self, rng: np.random.Generator, n_events: int, affinity: float):
        """Who and what: power-law user activity, in-cluster items with probability ``affinity``."""
        activity = rng.permutation(self.n_users) + 1.0
        activity = activity**-0.5
        users = rng.choice(self.n_users, n_events, p=activity / activity.sum())
        in_cluster = rng.random(n_events) < affinity
        items = np.empty(n_events, dtype=np.int64)
        global_p = self._popularity / self._popularity.sum()
        items[~in_cluster] = rng.choice(self.n_items, int((~in_cluster).sum()), p=global_p)
        for cluster in range(self.n_clusters):
            chosen = in_cluster & (self._users[users] == cluster)
            members = np.flatnonzero(self._items == cluster)
            weights = self._popularity[members]
            items[chosen] = rng.choice(members, int(chosen.sum()), p=weights / weights.sum())
        return users, items, in_cluster

    def events(
        self,
        n_events: int,
        affinity: float = 0.85,
        days: float = DEFAULT_DAYS,
        end: datetime | None = None,
    ) -> Iterator[dict]:
        """``n_events`` event dicts in time order, valid as ``schemas.events.Event``."""
        if n_events < 0:
            raise ValueError("n_events must be at least 0")
        if not 0.0 <= affinity <= 1.0:
            raise ValueError(f"affinity must be within [0, 1], got {affinity}")
        if days <= 0:
            raise ValueError(f"days must be positive, got {days}")
        end = end or datetime.now(UTC)
        if end.tzinfo is None:
            raise ValueError("end must be timezone-aware")
        rng = np.random.default_rng([self.seed, 1])
        users, items, in_cluster = self._draw(rng, n_events, affinity)

        types = rng.choice(list(EVENT_TYPE_SHARES), n_events, p=list(EVENT_TYPE_SHARES.values()))
        # Users rate their own cluster's items higher than strays.
        liked = in_cluster & (self._items[items] == self._users[users])
        ratings = np.where(liked, rng.integers(3, 6, n_events), rng.integers(1, 6, n_events))
        devices = rng.choice(len(DEVICES), n_events, p=DEVICE_SHARES)
        countries = rng.integers(0, len(COUNTRIES), self.n_users)
        # Strictly increasing microsecond offsets: every user's events are in order.
        span_us = int(days * 86_400_000_000)
        if n_events > span_us:
            raise ValueError("more events than microseconds in the time span")
        offsets = np.sort(rng.integers(0, span_us - n_events + 1, n_events)) + np.arange(n_events)
        start = end - timedelta(microseconds=span_us)
        event_ids = rng.integers(0, 256, (n_events, 16), dtype=np.uint8)

        for i in range(n_events):
            event_type = str(types[i])
            yield {
                "event_id": str(uuid.UUID(bytes=event_ids[i].tobytes(), version=4)),
                "user_id": user_id(int(users[i])),
                "item_id": item_id(int(items[i])),
                "event_type": event_type,
                "value": float(ratings[i]) if event_type == "rating" else None,
                "occurred_at": (start + timedelta(microseconds=int(offsets[i]))).isoformat(),
                "context": {
                    "device": DEVICES[devices[i]],
                    "country": COUNTRIES[countries[users[i]]],
                    "consent": True,
                },
            }


def generate_events(
    n_events: int,
    n_users: int,
    n_items: int,
    n_clusters: int,
    seed: int,
    affinity: float = 0.85,
    days: float = DEFAULT_DAYS,
    end: datetime | None = None,
) -> list[dict]:
    """All events of ``World(n_users, n_items, n_clusters, seed)`` as a list."""
    world = World(n_users, n_items, n_clusters, seed)
    return list(world.events(n_events, affinity=affinity, days=days, end=end))


def bronze_table(events: list[dict], settings: Settings) -> "pa.Table":
    """The ``events`` lake rows the speed layer would write for these events.

    For seeding a lake without the stream (tests, benchmarks): user ids are
    pseudonymised with the settings' key, each event is received when it occurred,
    Kafka coordinates are left empty, and events without consent are left out, as
    the speed layer leaves them out. The row itself is ``schemas.events.event_row``.
    """
    import pyarrow as pa

    from lambdarec.pseudonym import pseudonymise
    from schemas.events import consented, event_row
    from schemas.tables import EVENTS

    rows = [
        event_row(
            {
                **event,
                "user_id": pseudonymise(event["user_id"], settings.pseudonym_key),
                "received_at": event.get("received_at") or event["occurred_at"],
            }
        )
        for event in events
        if consented(event.get("context"))
    ]
    return pa.Table.from_pylist(rows, schema=EVENTS.schema)


def _batches(events: Iterator[dict], size: int) -> Iterator[list[dict]]:
    while batch := list(islice(events, size)):
        yield batch


def write_jsonl(events: Iterator[dict], path: Path, progress) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            count += 1
            progress.update(1)
    return count


def live_days(settings: Settings) -> float:
    """The span of generated events that the API takes as live traffic (``Settings.event_limits``): half
    the events topic's retention, which bounds how old ``occurred_at`` may be, and at most a week."""
    max_age = settings.event_limits.max_age
    return DEFAULT_DAYS if max_age is None else min(DEFAULT_DAYS, max_age / timedelta(days=1) / 2)


RETRYABLE = (429, 503)
"""Answers that mean "not now" (over the rate limit, broker unavailable): the same batch is sent again after
``Retry-After``, and event ids make the repeat harmless."""
RETRY_DEADLINE_S = 120.0


def post_batch(client, url: str, batch: list[dict], deadline_s: float = RETRY_DEADLINE_S):
    """POST one batch, sending it again after ``Retry-After`` while the answer is 429 or 503; the final answer.

    Past ``deadline_s`` of refusals the last answer is returned as it is, for the caller to report.
    """
    give_up = time.monotonic() + deadline_s
    while True:
        response = client.post(url, json=batch)
        if response.status_code not in RETRYABLE or time.monotonic() > give_up:
            return response
        time.sleep(min(float(response.headers.get("Retry-After", "1") or 1), max(give_up - time.monotonic(), 0.0)))


def post_batches(events: Iterator[dict], api: str, batch_size: int, progress,
                 headers: dict[str, str] | None = None) -> int:
    """POST ``events`` to ``{api}/events/batch`` with ``headers`` (an API key's, scope ingest); a batch refused
    for now (429, 503) is sent again after ``Retry-After``, any other refusal stops with the server's answer.

    Every event of a batch must come back either accepted or dropped for lack of
    consent; anything else means events were lost, and we stop rather than go on.
    """
    import httpx

    url = f"{api.rstrip('/')}/events/batch"
    count = 0
    with httpx.Client(timeout=30.0, headers=headers) as client:
        for batch in _batches(events, batch_size):
            response = post_batch(client, url, batch)
            if response.status_code != 202:
                raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:500]}")
            answer = response.json()
            settled = [*answer.get("accepted", []), *answer.get("dropped_no_consent", [])]
            if sorted(settled) != sorted(event["event_id"] for event in batch):
                raise RuntimeError(
                    f"POST {url} settled {len(settled)} of {len(batch)} events: {response.text[:500]}"
                )
            count += len(batch)
            progress.update(len(batch))
    return count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000, help="How many events (default 10000).")
    parser.add_argument("--users", type=int, default=500, help="How many users (default 500).")
    parser.add_argument("--items", type=int, default=1_000, help="How many items (default 1000).")
    parser.add_argument("--clusters", type=int, default=10, help="Planted clusters (default 10).")
    parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
    parser.add_argument(
        "--affinity", type=float, default=0.85, help="Chance an event stays in the user's cluster."
    )
    parser.add_argument(
        "--days", type=float, default=None,
        help="Spread events over the last N days (default: 7 for --out; for --api, half the events topic's "
        "retention, at most 7, since the API refuses events older than the retention).",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="Events per POST (default: the API's limit)."
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="Write JSON lines to this file.")
    target.add_argument("--api", help="Serving base URL; events are POSTed to URL/events/batch with the API key "
                        "in LAMBDAREC_API_KEY (scope ingest).")


def command(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from lambdarec.api_keys import bearer

    world = World(args.users, args.items, args.clusters, args.seed)
    days = args.days if args.days is not None else (DEFAULT_DAYS if args.out else live_days(settings))
    max_age = settings.event_limits.max_age
    if args.api and max_age is not None and days >= max_age / timedelta(days=1):
        raise SystemExit(f"--days {days:g} reaches past what the API accepts (occurred_at within the events topic's "
                         f"retention, {max_age / timedelta(days=1):g} days): load older history with `lambdarec import`")
    events = world.events(args.events, affinity=args.affinity, days=days)
    with tqdm(total=args.events, unit="event", file=sys.stderr) as progress:
        if args.out:
            count = write_jsonl(events, args.out, progress)
        else:
            batch_size = args.batch_size or settings.ingest_max_batch
            if batch_size < 1:
                raise SystemExit("--batch-size must be at least 1")
            count = post_batches(events, args.api, batch_size, progress, bearer(settings))
    print(json.dumps({"events": count, "target": str(args.out or args.api)}))
    return 0
