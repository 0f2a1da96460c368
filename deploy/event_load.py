"""Background event load: events posted to the API at a steady rate while something else is measured."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

TICK_S = 0.1  # one batch per tick


@dataclass
class LoadCounts:
    sent: int = 0
    accepted: int = 0


@contextmanager
def events_flowing(api_v1: str, events: Iterable[dict], per_s: int,
                   headers: dict[str, str] | None = None) -> Iterator[LoadCounts]:
    """While the block runs, POSTs ``events`` (cycled, each with a new id and the current time) to
    ``<api_v1>/events/batch`` at about ``per_s``, with ``headers`` (an API key's); the counts are final
    once the block has left."""
    stop, counts = threading.Event(), LoadCounts()
    drawn = itertools.cycle(list(events))
    per_tick = max(round(per_s * TICK_S), 1)

    def post() -> None:
        with httpx.Client(base_url=api_v1, timeout=30, headers=headers) as client:
            while not stop.wait(TICK_S):
                now = datetime.now(UTC).isoformat()
                chunk = [{**event, "event_id": str(uuid.uuid4()), "occurred_at": now}
                         for event in itertools.islice(drawn, per_tick)]
                response = client.post("/events/batch", json=chunk)
                counts.sent += len(chunk)
                if response.status_code == 202:
                    counts.accepted += len(response.json()["accepted"])

    thread = threading.Thread(target=post, name="event-load", daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(30)
