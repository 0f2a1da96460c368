"""``lambdarec import``: backfill historical interactions into ``events``, or load catalogue and profile
files into ``item_catalogue`` and ``user_profiles`` (``--kind``; ``batch.dimension_files``).

Layouts: CSV or Parquet with columns ``user, item, weight | rating, timestamp``
(an optional ``event_type`` column too), JSON lines of events as the API takes them
(``lambdarec generate --out``), MovieLens ``u.data`` (tab-separated
``user item rating timestamp``, no header) and MovieLens ``ratings.csv``
(``userId,movieId,rating,timestamp``). Rows with a rating become ``rating``
events whose value is the rating; rows with a weight become events of
``--event-type`` whose value (a quantity) multiplies that type's weight.

An import is one Delta commit keyed by the app transaction
``(import-<sha256 of the file>, 1)``, so importing the same file twice adds
nothing. Event ids are derived from the row's content (and its occurrence
number among identical rows), so the same history in another file gets the
same ids. Like the API, this is an ingestion edge: user ids are pseudonymised here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from batch import dimension_files
from batch.interaction_files import FORMATS, BadImportFile, detect_format, read_rows
from lambdarec.key_fingerprint import verify_pseudonym_key
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from lambdarec.settings import Settings
from schemas.events import EVENT_TYPES, event_row
from schemas.tables import EVENTS, ITEM_CATALOGUE, USER_PROFILES

ID_NAMESPACE = uuid.UUID("6d1f3c2e-8f0a-4b7e-9a51-3c0e2f4d5b17")


def to_events(rows: pa.Table, settings: Settings, event_type: str, source: str) -> pa.Table:
    """``events`` rows for the file's rows; a clear error names what is missing or wrong."""
    names = set(rows.column_names)
    missing = {"user", "item", "timestamp"} - names
    if missing or not names & {"weight", "rating"}:
        need = sorted(missing) + ([] if names & {"weight", "rating"} else ["weight or rating"])
        raise BadImportFile(f"{source}: missing column(s) {need}; found {sorted(names)}")
    occurred = _timestamps(rows.column("timestamp"), source)
    kind = "rating" if "rating" in names else "weight"
    values = pc.cast(rows.column(kind), pa.float64())
    if values.null_count or pc.any(pc.is_nan(values)).as_py():
        raise BadImportFile(f"{source}: column {kind!r} has empty or non-numeric values")
    if "event_type" in names:
        types = rows.column("event_type").cast(pa.string()).to_pylist()
    else:
        types = ["rating" if kind == "rating" else event_type] * rows.num_rows
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise BadImportFile(f"{source}: unknown event_type(s) {unknown}; expected one of {list(EVENT_TYPES)}")
    users = [str(u) for u in rows.column("user").to_pylist()]
    items = [str(i) for i in rows.column("item").to_pylist()]
    if any(u in ("", "None") for u in users) or any(i in ("", "None") for i in items):
        raise BadImportFile(f"{source}: columns 'user' and 'item' must not be empty")
    received = datetime.now(UTC)
    pseudonyms: dict[str, str] = {}
    seen: dict[tuple, int] = {}
    out: list[dict[str, Any]] = []
    rows_in = zip(users, items, types, values.to_pylist(), occurred.to_pylist(), strict=True)
    for user, item, etype, value, at in tqdm(rows_in, total=len(users), unit="row", file=sys.stderr, disable=None):
        key = (user, item, etype, value, at.isoformat())
        seen[key] = seen.get(key, -1) + 1
        if user not in pseudonyms:
            pseudonyms[user] = pseudonymise(user, settings.pseudonym_key)
        message = {
            "event_id": str(uuid.uuid5(ID_NAMESPACE, json.dumps([*key, seen[key]]))),
            "user_id": pseudonyms[user],
            "item_id": item,
            "event_type": etype,
            "value": value,
            "occurred_at": at,
            "received_at": received,
            "context": {"source": source},
        }
        out.append(event_row(message))
    return pa.Table.from_pylist(out, schema=EVENTS.schema)


def _timestamps(column: pa.ChunkedArray, source: str) -> pa.ChunkedArray:
    """Unix seconds or ISO-8601 text, as UTC microsecond timestamps."""
    try:
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            micros = pc.cast(pc.multiply(pc.cast(column, pa.float64()), 1_000_000), pa.int64())
            return pc.cast(micros, pa.timestamp("us", tz="UTC"))
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            return pc.cast(column, pa.timestamp("us", tz="UTC"))
        if pa.types.is_timestamp(column.type):  # the CSV reader parsed text without an offset
            raise BadImportFile(f"{source}: ISO timestamps need a UTC offset (e.g. 2025-03-01T10:00:00Z)")
        parsed = [datetime.fromisoformat(str(text)) for text in column.to_pylist()]
    except (ValueError, pa.ArrowInvalid) as exc:
        raise BadImportFile(f"{source}: column 'timestamp' is neither unix seconds nor ISO-8601: {exc}") from exc
    if any(p.tzinfo is None for p in parsed):
        raise BadImportFile(f"{source}: ISO timestamps need a UTC offset (e.g. 2025-03-01T10:00:00Z)")
    return pa.chunked_array([pa.array([p.astimezone(UTC) for p in parsed], pa.timestamp("us", tz="UTC"))])


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_file(path: Path, settings: Settings, fmt: str = "auto", event_type: str = "view") -> dict[str, Any]:
    """Append the file's events in one commit; a file imported before adds nothing."""
    if not path.is_file():
        raise BadImportFile(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    digest = file_digest(path)
    lake = Lake(settings)
    app_id = f"import-{digest[:32]}"
    if lake.committed(EVENTS, app_id, 1):
        return {"file": str(path), "format": fmt, "sha256": digest, "imported": 0, "events_version": None}
    events = to_events(read_rows(path, fmt), settings, event_type, f"import:{path.name}")
    version = lake.append_arrow(EVENTS, events, app_id=app_id, txn_version=1)
    imported = events.num_rows if version is not None else 0
    return {"file": str(path), "format": fmt, "sha256": digest, "imported": imported, "events_version": version}


def import_dimension(path: Path, settings: Settings, kind: str) -> dict[str, Any]:
    """Upsert a catalogue or profile file into its table (a Delta MERGE by key: importing it again
    changes nothing but ``updated_at``). A later CDC change of the same row wins over the file."""
    if not path.is_file():
        raise BadImportFile(f"{path}: no such file")
    if kind == dimension_files.CATALOGUE:
        spec, rows = ITEM_CATALOGUE, dimension_files.read_catalogue(path)
    else:
        spec, rows = USER_PROFILES, [{**row, "user_id": pseudonymise(row["user_id"], settings.pseudonym_key)}
                                     for row in dimension_files.read_profiles(path)]
    if not rows:
        raise BadImportFile(f"{path.name}: no rows")
    key = spec.keys[0]
    if len({row[key] for row in rows}) != len(rows):
        raise BadImportFile(f"{path.name}: a {key} appears twice")
    source = pa.Table.from_pylist([{**row, "source_lsn": None} for row in rows], schema=spec.schema)
    merger = Lake(settings).merge_arrow(spec, source, f"t.{key} = s.{key}")
    assert merger is not None  # no app transaction: never skipped
    metrics = merger.when_matched_update_all().when_not_matched_insert_all().execute()
    return {"file": str(path), "kind": kind, "table": spec.name, "rows": len(rows),
            "inserted": metrics.get("num_target_rows_inserted"), "updated": metrics.get("num_target_rows_updated")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="CSV, Parquet, MovieLens u.data or ratings.csv file; with --kind, "
                        "a catalogue or profile file (CSV, JSON, MovieLens u.item or u.user).")
    parser.add_argument("--kind", choices=("events", dimension_files.CATALOGUE, dimension_files.PROFILES),
                        help="What the file holds (default: events, but catalogue for u.item, profiles for u.user).")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="File layout (default: detect).")
    parser.add_argument(
        "--event-type", choices=EVENT_TYPES, default="view",
        help="Event type of rows with a weight column and no event_type column (default: view).",
    )


def command(args: argparse.Namespace, settings: Settings) -> int:
    kind = args.kind or dimension_files.kind_of(args.path) or "events"
    if kind != dimension_files.CATALOGUE:  # events and profiles carry user ids, pseudonymised here
        verify_pseudonym_key(settings, "import")
    try:
        if kind == "events":
            summary = import_file(args.path, settings, args.format, args.event_type)
        else:
            summary = import_dimension(args.path, settings, kind)
    except BadImportFile as exc:
        print(f"lambdarec import: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0
