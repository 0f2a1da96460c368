"""Catalogue and profile files users bring when they have no operational database to capture.

Read into the rows of ``item_catalogue`` and ``user_profiles`` (``schemas.tables``):

- catalogue: CSV or JSON (an array, or one object per line) with ``item_id`` (or
  ``item``), ``title``, and optionally ``category``, ``price``, ``available`` and
  ``attributes`` (an object); other columns become attributes. MovieLens ``u.item``
  (``id|title|release date|video date|url|19 genre flags``): the first genre is the
  category, all of them the ``genres`` attribute, the year the ``year`` attribute.
- profiles: CSV or JSON with ``user_id`` (or ``user``) and optionally ``country``,
  ``age_band`` (or ``age``, banded), ``signup_date``, ``membership``. MovieLens
  ``u.user`` (``id|age|gender|occupation|zip``): age banded.

User ids are raw here; the importer pseudonymises them.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from batch.interaction_files import BadImportFile

CATALOGUE, PROFILES = "catalogue", "profiles"
MOVIELENS_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                    "War", "Western")
AGE_BANDS = ((18, "under-18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (200, "55+"))
ITEM_FIELDS = ("item_id", "title", "category", "price", "available", "attributes")
USER_FIELDS = ("user_id", "country", "age_band", "age", "signup_date", "membership")


def kind_of(path: Path) -> str | None:
    """``catalogue`` or ``profiles`` for MovieLens' own file names; None for anything else."""
    return {"u.item": CATALOGUE, "u.user": PROFILES}.get(path.name)


def read_catalogue(path: Path) -> list[dict[str, Any]]:
    """``item_catalogue`` rows (without ``source_lsn``) for the file's items."""
    if path.name == "u.item":
        return [_movielens_item(fields, path, n) for n, fields in enumerate(_pipe_rows(path))]
    return [_item(record, path, n) for n, record in enumerate(_records(path))]


def read_profiles(path: Path) -> list[dict[str, Any]]:
    """``user_profiles`` rows (raw ``user_id``, without ``source_lsn``) for the file's users."""
    if path.name == "u.user":
        return [_user({"user_id": f[0], "age": f[1]}, path, n) for n, f in enumerate(_pipe_rows(path))]
    return [_user(record, path, n) for n, record in enumerate(_records(path))]


def age_band(age: Any, where: str) -> str:
    try:
        years = int(age)
    except (TypeError, ValueError) as exc:
        raise BadImportFile(f"{where}: age {age!r} is not a whole number") from exc
    return next(band for limit, band in AGE_BANDS if years < limit)


def _records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            return [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]
    if path.suffix in (".json", ".jsonl"):
        text = path.read_text(encoding="utf-8").strip()
        try:
            found = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
        except json.JSONDecodeError as exc:
            raise BadImportFile(f"{path.name}: not JSON ({exc})") from exc
        if not all(isinstance(record, dict) for record in found):
            raise BadImportFile(f"{path.name}: expected JSON objects, one per item or user")
        return found
    raise BadImportFile(f"cannot tell the layout of {path.name}: use .csv, .json, .jsonl, u.item or u.user")


def _pipe_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="latin-1") as handle:
        return [line.rstrip("\n").split("|") for line in handle if line.strip()]


def _item(record: dict[str, Any], path: Path, n: int) -> dict[str, Any]:
    where = f"{path.name} row {n + 1}"
    item = record.get("item_id", record.get("item"))
    if item in (None, "") or not record.get("title"):
        raise BadImportFile(f"{where}: item_id and title are required")
    attributes = record.get("attributes") or {}
    if isinstance(attributes, str):
        attributes = json.loads(attributes)
    extra = {k: v for k, v in record.items() if k not in (*ITEM_FIELDS, "item")}
    try:
        price = float(record["price"]) if record.get("price") not in (None, "") else None
    except ValueError as exc:
        raise BadImportFile(f"{where}: price {record['price']!r} is not a number") from exc
    available = record.get("available", True)
    if isinstance(available, str):
        if available.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise BadImportFile(f"{where}: available {available!r} is not true or false")
        available = available.lower() in ("true", "1", "yes")
    return {"item_id": str(item), "title": str(record["title"]), "category": record.get("category"), "price": price,
            "available": bool(available), "attributes": {str(k): str(v) for k, v in {**extra, **attributes}.items()},
            "updated_at": datetime.now(UTC)}


def _movielens_item(fields: list[str], path: Path, n: int) -> dict[str, Any]:
    if len(fields) != 5 + len(MOVIELENS_GENRES):
        raise BadImportFile(f"{path.name} row {n + 1}: {len(fields)} fields, not {5 + len(MOVIELENS_GENRES)}")
    genres = [genre for genre, flag in zip(MOVIELENS_GENRES, fields[5:], strict=True) if flag == "1"]
    attributes = {"genres": "|".join(genres)}
    if fields[2]:
        attributes["year"] = fields[2][-4:]
    return {"item_id": fields[0], "title": fields[1], "category": genres[0] if genres else None, "price": None,
            "available": True, "attributes": attributes, "updated_at": datetime.now(UTC)}


def _user(record: dict[str, Any], path: Path, n: int) -> dict[str, Any]:
    where = f"{path.name} row {n + 1}"
    user = record.get("user_id", record.get("user"))
    if user in (None, ""):
        raise BadImportFile(f"{where}: user_id is required")
    band = record.get("age_band") or (age_band(record["age"], where) if record.get("age") not in (None, "") else None)
    signup = record.get("signup_date")
    try:
        signup = date.fromisoformat(signup) if isinstance(signup, str) else signup
    except ValueError as exc:
        raise BadImportFile(f"{where}: signup_date {signup!r} is not YYYY-MM-DD") from exc
    return {"user_id": str(user), "country": record.get("country"), "age_band": band, "signup_date": signup,
            "membership": record.get("membership"), "updated_at": datetime.now(UTC)}
