"""Interaction files users bring: CSV, Parquet, JSON lines of events, MovieLens ``u.data`` and ``ratings.csv``.

Read into one table layout (``user, item, rating | weight, timestamp`` and an
optional ``event_type``) by the importer (``lambdarec import``) and the offline
evaluation (``lambdarec evaluate``), so both accept exactly the same files.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

FORMATS = ("auto", "csv", "parquet", "jsonl", "movielens-udata", "movielens-ratings")
EVENT_FIELDS = {"user_id": "user", "item_id": "item", "event_type": "event_type", "occurred_at": "timestamp"}
"""A JSON line is an event as the API takes it (``schemas.events.Event``, what ``lambdarec generate --out``
writes): these fields, and ``value`` (a rating, or a quantity; none means 1) as the weight."""
MOVIELENS_RATINGS = {"userId": "user", "movieId": "item", "rating": "rating", "timestamp": "timestamp"}


class BadImportFile(ValueError):
    """The file cannot be imported as it is; the message says which column or value."""


def detect_format(path: Path) -> str:
    if path.name == "u.data":
        return "movielens-udata"
    if path.suffix == ".parquet":
        return "parquet"
    if path.suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if path.suffix == ".csv":
        with path.open(encoding="utf-8") as handle:
            header = handle.readline().strip().split(",")
        return "movielens-ratings" if set(MOVIELENS_RATINGS) <= set(header) else "csv"
    raise BadImportFile(f"cannot tell the layout of {path.name}; pass --format ({', '.join(FORMATS[1:])})")


def read_rows(path: Path, fmt: str) -> pa.Table:
    """The file as a table with columns user, item, rating or weight, timestamp (event_type optional)."""
    if fmt == "movielens-udata":
        names = ["user", "item", "rating", "timestamp"]
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(delimiter="\t"),
            convert_options=pacsv.ConvertOptions(column_types={"user": pa.string(), "item": pa.string()}),
        )
    if fmt == "jsonl":
        return _event_lines(path)
    strings = {"user": pa.string(), "item": pa.string(), "userId": pa.string(), "movieId": pa.string()}
    if fmt == "parquet":
        table = pq.read_table(path)
    else:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=strings))
    if fmt == "movielens-ratings":
        table = table.select(list(MOVIELENS_RATINGS)).rename_columns(list(MOVIELENS_RATINGS.values()))
    return table


def _event_lines(path: Path) -> pa.Table:
    """JSON lines of events as the interaction layout: ``value`` is the weight, 1 where an event has none."""
    schema = pa.schema([(name, pa.string()) for name in EVENT_FIELDS] + [("value", pa.float64())])
    table = pajson.read_json(path, parse_options=pajson.ParseOptions(explicit_schema=schema,
                                                                     unexpected_field_behavior="ignore"))
    weight = pc.fill_null(table.column("value"), 1.0)
    return pa.table({**{column: table.column(field) for field, column in EVENT_FIELDS.items()}, "weight": weight})
