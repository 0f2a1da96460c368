"""Per-user and per-item speed features as pure folds over events, free of Spark.

The streaming state (``speed.stateful``) and the batch recomputation that checks
it (``recompute``) call the same functions, so they cannot drift apart. A state
is a set of per-minute buckets plus "newest event" fields; buckets merge by
addition and are pruned relative to the newest event time, so the result does
not depend on the order or batching in which events arrive.

Trending is emitted per (segment, item, minute): a batch emits the minutes its
events changed, each with the item's full count in that minute. An item keeps
the minutes of the trending window ending at the minute after its own newest
event, so a minute inside the window ending after the newest event of the whole
stream is never pruned from any item's state: the newest row emitted for such
a minute is the count of every event in it, whatever the batching. Serving sums
each item's minutes over that common window (``schemas.speed_updates``), and
``speed.recompute`` checks exactly those minutes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from schemas.speed_updates import GLOBAL_SEGMENT, segments

__all__ = ["GLOBAL_SEGMENT", "segments"]  # re-exported: the contract's segment names

WEIGHT_LIMIT = 1e15
"""Where an item-minute's weight saturates: far above what bounded values reach (``event_value_max`` times a
type's weight, per event), and low enough that serving's sums over a day of minutes stay finite."""
MINUTE_US = 60_000_000
HOUR_US = 3600 * 1_000_000
DAY_US = 24 * HOUR_US


def minute_of(ts_us: int) -> int:
    return ts_us - ts_us % MINUTE_US


def new_user() -> dict[str, Any]:
    return {"buckets": {}, "last_seen": None, "last_event_id": "", "country": None, "device": None}


def fold_user(state: dict[str, Any], events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add events (``occurred_at`` in µs, ``event_type``, ``event_id``, ``country``, ``device``, and
    the item's catalogue ``category`` when known)."""
    buckets: dict[str, list] = state["buckets"]
    for e in events:
        ts = int(e["occurred_at"])
        # counts by type, first and last µs, counts by category (absent from states older than it)
        b = buckets.setdefault(str(minute_of(ts)), [{}, ts, ts, {}])
        if len(b) == 3:
            b.append({})
        b[0][e["event_type"]] = b[0].get(e["event_type"], 0) + 1
        b[1], b[2] = min(b[1], ts), max(b[2], ts)
        if category := e.get("category"):
            b[3][category] = b[3].get(category, 0) + 1
        if state["last_seen"] is None or (ts, e["event_id"]) > (state["last_seen"], state["last_event_id"]):
            state.update(last_seen=ts, last_event_id=e["event_id"], country=e.get("country"), device=e.get("device"))
    horizon = minute_of(state["last_seen"]) - DAY_US
    state["buckets"] = {m: b for m, b in buckets.items() if int(m) > horizon}
    return state


def user_features(user_id: str, state: Mapping[str, Any], session_gap_s: int) -> dict[str, Any]:
    """The user's row: counts by event type and by category (their affinities) in the last 1 h / 24 h,
    the current session, last seen."""
    last = state["last_seen"]
    ordered = sorted(((int(m), b) for m, b in state["buckets"].items()), reverse=True)
    totals: dict[str, dict[str, int]] = {"counts_1h": {}, "counts_24h": {}, "categories_1h": {}, "categories_24h": {}}
    for minute, (counts, _, _, *by_category) in ordered:
        recent = minute > minute_of(last) - HOUR_US
        for prefix, values in (("counts", counts), ("categories", by_category[0] if by_category else {})):
            for name, n in values.items():
                for window in ("24h", "1h") if recent else ("24h",):
                    total = totals[f"{prefix}_{window}"]
                    total[name] = total.get(name, 0) + n
    session_start, session_events, previous_first = None, 0, None
    for _, (counts, first, newest, *_) in ordered:
        if previous_first is not None and previous_first - newest > session_gap_s * 1_000_000:
            break
        session_start, previous_first = first, first
        session_events += sum(counts.values())
    session_id = hashlib.sha1(f"{user_id}|{session_start}".encode()).hexdigest()[:16]
    return {
        "user_id": user_id,
        "last_seen": last,
        "session_id": session_id,
        "session_start": session_start,
        "session_events": session_events,
        **{name: sorted(total.items()) for name, total in totals.items()},
        "country": state["country"],
        "device": state["device"],
    }


def new_item() -> dict[str, Any]:
    return {"buckets": {}, "last": None}


def fold_item(state: dict[str, Any], events: Iterable[Mapping[str, Any]], window_s: int) -> dict[str, Any]:
    """Add events (``occurred_at`` µs, ``weight``) to an item's per-minute counts."""
    buckets: dict[str, list] = state["buckets"]
    for e in events:
        ts = int(e["occurred_at"])
        b = buckets.setdefault(str(minute_of(ts)), [0, 0.0])
        b[0] += 1
        b[1] = saturating_add(b[1], e["weight"])
        state["last"] = ts if state["last"] is None else max(state["last"], ts)
    start = _window(state["last"], window_s)[0]
    state["buckets"] = {m: b for m, b in buckets.items() if int(m) >= start}
    return state


def saturating_add(total: float, weight: float | None) -> float:
    """``total + weight`` held within ±``WEIGHT_LIMIT``. A weight that is not a finite number adds
    nothing, and a total that is not (a state kept before values were bounded) starts again from
    zero, so no trending row is ever infinite or NaN."""
    total = total if math.isfinite(total) else 0.0
    if weight is None or not math.isfinite(weight):
        return total
    return min(max(total + weight, -WEIGHT_LIMIT), WEIGHT_LIMIT)


def touched_minutes(events: Iterable[Mapping[str, Any]]) -> set[int]:
    """The minutes (µs) a batch of events falls in."""
    return {minute_of(int(e["occurred_at"])) for e in events}


def item_minutes(segment: tuple[str, str], item_id: str, state: Mapping[str, Any],
                 minutes: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """The item's trending rows, one per minute: its count and weight in that minute.

    ``minutes`` limits them to those a batch touched (the rest are unchanged);
    minutes already pruned from the state (older than the item's window) have no row.
    """
    wanted = sorted(int(m) for m in state["buckets"]) if minutes is None else sorted(
        m for m in minutes if str(m) in state["buckets"])
    rows = []
    for minute in wanted:
        events, weight = state["buckets"][str(minute)]
        rows.append({
            "segment_type": segment[0],
            "segment": segment[1],
            "window_start": minute,
            "window_end": minute + MINUTE_US,
            "item_id": item_id,
            "events": events,
            "weight": round(weight, 9),
        })
    return rows


def item_window_start(newest_minute_us: int, window_s: int) -> int:
    """First minute of the trending window that ends after ``newest_minute_us``."""
    return _window(newest_minute_us, window_s)[0]


def _window(last_us: int, window_s: int) -> tuple[int, int]:
    end = minute_of(last_us) + MINUTE_US
    return end - window_s * 1_000_000, end
