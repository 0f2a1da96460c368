"""The ``speed-updates`` contract between the speed layer and serving, as code both sides import.

Segments:
    Trending is counted per segment, a ``(segment_type, segment)`` pair: ``GLOBAL_SEGMENT``
    for every event, plus one per context attribute the event carries
    (``("country", "DE")``, ``("device", "ios")``) and one for its user's profile age band
    (``("age_band", "25-34")``); ``segments()`` lists an event's.

Messages (one JSON object per Kafka record, UTF-8), by ``kind``:
    ``interaction``      the fields of ``INTERACTION_FIELDS`` flat in the message, plus
                         ``events_version`` once the event is in Delta (absent or null before)
                         and ``received_at``, when the platform accepted the event (serving's
                         freshness: accepted → visible);
    ``user_interactions`` ``{query_id, batch_id, events_version, rows}``, rows of
                         ``INTERACTION_FIELDS`` (and optionally their own ``events_version``);
    ``user_features``    ``{query_id, batch_id, rows}``, rows of ``USER_FEATURES_FIELDS``;
    ``item_trending``    ``{query_id, batch_id, rows}``, rows of ``ITEM_TRENDING_FIELDS``: one
                         row per (segment, item, minute), ``window_start``/``window_end`` the
                         minute's bounds, ``events``/``weight`` the item's count in that minute.
                         Trending over a window is the sum of an item's minutes in it;
    ``progress``         ``{query_id, batch_id, progress}``, one ``speed_progress`` row.

Timestamps are RFC 3339 text in one fixed-width form, UTC with microseconds
(``2024-05-01T12:00:00.000000+00:00``), so their text order is their time order.

``encode_*`` build the message bytes (the Spark side builds ``interaction`` with Spark
functions from ``INTERACTION_FIELDS`` and ``SPARK_TIMESTAMP_PATTERN``); ``decode``
checks one message and returns it in canonical form, or raises ``BadUpdate``.
This module imports nothing of ours.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

KIND_INTERACTION = "interaction"
KIND_USER_INTERACTIONS = "user_interactions"
KIND_USER_FEATURES = "user_features"
KIND_ITEM_TRENDING = "item_trending"
KIND_PROGRESS = "progress"
KINDS = (KIND_INTERACTION, KIND_USER_INTERACTIONS, KIND_USER_FEATURES, KIND_ITEM_TRENDING, KIND_PROGRESS)
ROW_KINDS = (KIND_USER_INTERACTIONS, KIND_USER_FEATURES, KIND_ITEM_TRENDING)

SEGMENT_GLOBAL = "global"
SEGMENT_COUNTRY = "country"
SEGMENT_DEVICE = "device"
SEGMENT_AGE_BAND = "age_band"
GLOBAL_SEGMENT = (SEGMENT_GLOBAL, "*")
SEGMENT_ATTRIBUTES = (SEGMENT_COUNTRY, SEGMENT_AGE_BAND, SEGMENT_DEVICE)
"""Attributes with a trending segment, most specific first: the event's country and device (its
context) and the user's age band (their profile in ``user_profiles``, joined by the speed layer)."""

INTERACTION_FIELDS = ("event_id", "user_id", "item_id", "event_type", "weight", "occurred_at", "country", "device")
USER_FEATURES_FIELDS = ("user_id", "last_seen", "session_id", "session_start", "session_events", "counts_1h",
                        "counts_24h", "categories_1h", "categories_24h", "country", "device")
MAP_FIELDS = ("counts_1h", "counts_24h", "categories_1h", "categories_24h")
"""User feature maps, name → count: by event type (``counts_``) and by the item's catalogue category
(``categories_``, the user's category affinities) over the last hour and day."""
ITEM_TRENDING_FIELDS = ("segment_type", "segment", "window_start", "window_end", "item_id", "events", "weight")
TIMESTAMP_FIELDS = frozenset({"occurred_at", "received_at", "last_seen", "session_start", "window_start",
                              "window_end"})
ROW_FIELDS = {KIND_USER_INTERACTIONS: (*INTERACTION_FIELDS, "events_version", "received_at"),
              KIND_USER_FEATURES: USER_FEATURES_FIELDS, KIND_ITEM_TRENDING: ITEM_TRENDING_FIELDS}
REQUIRED = {
    KIND_USER_INTERACTIONS: ("event_id", "user_id", "item_id", "event_type", "weight", "occurred_at"),
    KIND_USER_FEATURES: ("user_id",),
    KIND_ITEM_TRENDING: ("segment_type", "segment", "window_start", "window_end", "item_id", "events", "weight"),
}
SPARK_TIMESTAMP_PATTERN = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSxxx"  # in a UTC Spark session: the same text as timestamp()


class BadUpdate(ValueError):
    """A speed-updates record that is not a well-formed update."""


def segments(country: str | None, device: str | None, age_band: str | None = None) -> list[tuple[str, str]]:
    """The trending segments an event counts in: global, and each of its known attributes."""
    values = {SEGMENT_COUNTRY: country, SEGMENT_DEVICE: device, SEGMENT_AGE_BAND: age_band}
    return [GLOBAL_SEGMENT, *((name, value) for name in SEGMENT_ATTRIBUTES if (value := values[name]))]


# -- timestamps -----------------------------------------------------------------------


def timestamp(value: dt.datetime | int | str) -> str:
    """The contract's text for a datetime (naive means UTC), µs since the epoch, or RFC 3339 text."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        value = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=value)
    elif not isinstance(value, dt.datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def timestamp_us(text: str) -> int:
    """µs since the epoch of a contract timestamp (any RFC 3339 text)."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# -- encoding -------------------------------------------------------------------------


def row(kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """A row of ``kind`` in message form from speed-table or processor values: the contract's
    fields only, timestamps as contract text, maps (Arrow gives ``[(key, value), ...]``) as objects."""
    fields = ROW_FIELDS[kind]
    out = {name: _json_value(name, values.get(name)) for name in fields if name in values}
    return out


def encode_rows(kind: str, query_id: str, batch_id: int, rows: Iterable[Mapping[str, Any]],
                events_version: int | None = None) -> bytes:
    """One ``user_interactions``/``user_features``/``item_trending`` message."""
    if kind not in ROW_KINDS:
        raise ValueError(f"not a row kind: {kind!r}")
    message: dict[str, Any] = {"kind": kind, "query_id": str(query_id), "batch_id": int(batch_id)}
    if kind == KIND_USER_INTERACTIONS:
        message["events_version"] = int(events_version)  # type: ignore[arg-type]
    message["rows"] = [row(kind, r) for r in rows]
    return _dumps(message)


def encode_interaction(values: Mapping[str, Any], events_version: int | None = None) -> bytes:
    """One ``interaction`` message (what ``speed.transforms.interaction_messages`` builds in Spark)."""
    message = {"kind": KIND_INTERACTION, **row(KIND_USER_INTERACTIONS, {**values, "events_version": events_version})}
    if events_version is None:
        message.pop("events_version", None)
    return _dumps(message)


def progress_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """A ``speed_progress`` row in message form: timestamps as contract text."""
    return {k: timestamp(v) if isinstance(v, dt.datetime) else v for k, v in values.items()}


def encode_progress(query_id: str, batch_id: int, progress: Mapping[str, Any]) -> bytes:
    """One ``progress`` message."""
    return _dumps({"kind": KIND_PROGRESS, "query_id": str(query_id), "batch_id": int(batch_id),
                   "progress": progress_row(progress)})


def unencodable_field(values: Mapping[str, Any]) -> str | None:
    """The first field of a row that no message can carry (JSON has no NaN or infinity, and
    ``encode_rows`` refuses them rather than write what ``decode`` would reject), or None."""
    return next((name for name, value in values.items() if isinstance(value, float) and not math.isfinite(value)),
                None)


def _json_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in TIMESTAMP_FIELDS:
        return timestamp(value)
    if isinstance(value, list) and name in MAP_FIELDS:
        return {str(k): v for k, v in value}
    return value


def _dumps(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


# -- decoding -------------------------------------------------------------------------


def decode(value: bytes | str | Mapping[str, Any]) -> dict[str, Any] | None:
    """One message, checked and in canonical form; None for a kind this contract does not know
    (a newer producer's), ``BadUpdate`` for anything malformed."""
    if isinstance(value, (bytes, bytearray, str)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise BadUpdate(f"not JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise BadUpdate("a speed update must be a JSON object")
    kind = value.get("kind")
    if kind not in KINDS:
        return None
    try:
        if kind == KIND_INTERACTION:
            return {"kind": kind, **decode_row(KIND_USER_INTERACTIONS, value)}
        head = {"kind": kind, "query_id": _text(value, "query_id"), "batch_id": _int(value, "batch_id")}
        if kind == KIND_PROGRESS:
            progress = value.get("progress")
            if not isinstance(progress, Mapping) or progress.get("batch_id") is None:
                raise KeyError("progress")
            return {**head, "progress": dict(progress)}
        if kind == KIND_USER_INTERACTIONS:
            head["events_version"] = _int(value, "events_version")
        rows = value.get("rows")
        if not isinstance(rows, list):
            raise KeyError("rows")
    except (KeyError, TypeError, ValueError) as exc:
        raise BadUpdate(f"malformed {kind} update: {exc!r}") from exc
    return {**head, "rows": decode_rows(kind, rows)}


def decode_rows(kind: str, rows: Iterable[Any]) -> list[dict[str, Any]]:
    return [decode_row(kind, r) for r in rows]


def decode_row(kind: str, values: Any) -> dict[str, Any]:
    """One row of ``kind`` checked and in canonical form (``BadUpdate`` names the field)."""
    if not isinstance(values, Mapping):
        raise BadUpdate(f"malformed {kind} row: a row must be a JSON object")
    missing = [name for name in REQUIRED[kind] if values.get(name) is None]
    if missing:
        raise BadUpdate(f"malformed {kind} row: missing {', '.join(missing)}")
    out: dict[str, Any] = {}
    try:
        for name in ROW_FIELDS[kind]:
            value = values.get(name)
            if value is None:
                out[name] = None
            elif name in TIMESTAMP_FIELDS:
                out[name] = timestamp(str(value))
            elif name in ("weight",):
                out[name] = float(value)
                if not math.isfinite(out[name]):
                    raise ValueError(f"{name} is not finite")
            elif name in ("events", "session_events", "events_version"):
                out[name] = _int(values, name)
            elif name in MAP_FIELDS:
                out[name] = {str(k): int(v) for k, v in dict(value).items()}
            else:
                out[name] = str(value)
    except (TypeError, ValueError) as exc:
        raise BadUpdate(f"malformed {kind} row: {name}: {exc}") from exc
    return out


def _text(message: Mapping[str, Any], name: str) -> str:
    value = message.get(name)
    if value is None:
        raise KeyError(name)
    return str(value)


def _int(message: Mapping[str, Any], name: str) -> int:
    value = message.get(name)
    if value is None:
        raise KeyError(name)
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{name} is not an integer")
    return int(value)
