"""The model registry: an append-only status log in the Delta ``models`` table.

Each status change is a new row; a model's current status is its newest row.
Nothing is updated in place, so the history of what was served when survives,
and a publish is one atomic append (serving tails the table's log expecting append
commits only). Spark jobs pass their session and append through delta-spark; other
callers append through delta-rs.

It lives in the core because every layer uses it: batch jobs (training, the
publish gate, maintenance) write it, serving follows it, and ``lambdarec status``
and the demo read it. No Spark is imported here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lambdarec.lake import Lake
from lambdarec.settings import canonical_als_params, canonical_engine
from schemas.tables import MODELS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TRAINING = "training"
CANDIDATE = "candidate"
PUBLISHED = "published"
REJECTED = "rejected"
FAILED = "failed"
JSON_FIELDS = ("params", "metrics")


def _rows(lake: Lake) -> list[dict[str, Any]]:
    """Every registry row, oldest first."""
    return _oldest_first(lake.read_arrow(MODELS))


def _oldest_first(registry: pa.Table) -> list[dict[str, Any]]:
    rows = sorted(registry.to_pylist(), key=lambda row: row["recorded_at"])
    for row in rows:  # rows written before engine ids were unified say e.g. "spark-als"
        row["engine"] = canonical_engine(row.get("engine"))
    return rows


def current_statuses(lake: Lake) -> dict[int, dict[str, Any]]:
    """Each model version's newest row."""
    return current_statuses_in(lake.read_arrow(MODELS))


def current_statuses_in(registry: pa.Table) -> dict[int, dict[str, Any]]:
    """``current_statuses`` over the rows of a registry snapshot already read."""
    return _newest_per_version(_oldest_first(registry))


def _newest_per_version(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {row["model_version"]: row for row in rows}


def latest_published(lake: Lake) -> dict[str, Any] | None:
    """The most recently published model that is still published, or None.

    ``params`` and ``metrics`` come back parsed from JSON.
    """
    return latest_published_in(lake.read_arrow(MODELS))


def latest_published_in(registry: pa.Table) -> dict[str, Any] | None:
    """``latest_published`` over the rows of a registry snapshot already read."""
    published = [row for row in current_statuses_in(registry).values() if row["status"] == PUBLISHED]
    if not published:
        return None
    return parsed(max(published, key=lambda r: (r["recorded_at"], r["model_version"])))


def parsed(row: dict[str, Any]) -> dict[str, Any]:
    """A registry row with ``params`` and ``metrics`` parsed from JSON."""
    row = dict(row)
    for name in JSON_FIELDS:
        row[name] = json.loads(row[name]) if row[name] else {}
    row["params"] = canonical_als_params(row["params"])  # older rows: Spark ML's regParam, maxIter
    return row


def find_run(lake: Lake, run_key: str) -> dict[str, Any] | None:
    """The newest row of the model trained for ``run_key`` (a scheduler's data interval), or None."""
    for row in reversed(_rows(lake)):
        if row["params"] and json.loads(row["params"]).get("run_key") == run_key:
            return current_statuses(lake)[row["model_version"]]
    return None


def next_model_version(lake: Lake) -> int:
    """One past the highest version the registry has seen (1 for an empty registry)."""
    versions = lake.read_arrow(MODELS).column("model_version").to_pylist()
    return max((v for v in versions if v is not None), default=0) + 1


def record_status(
    lake: Lake,
    version: int,
    status: str,
    reason: str,
    *,
    app_id: str | None = None,
    spark: "SparkSession | None" = None,
    **fields: Any,
) -> bool:
    """Append one status row; False if ``app_id`` already recorded this version.

    ``fields`` fill the other registry columns (``metrics``/``params`` may be dicts;
    they are stored as JSON). With ``app_id`` the append is keyed by the Delta app
    transaction ``(app_id, version)``, so a re-run job records each status once.
    With ``spark`` (a Spark job's session) the row is appended through delta-spark.
    """
    unknown = set(fields) - set(MODELS.columns)
    if unknown:
        raise ValueError(f"unknown registry columns: {sorted(unknown)}")
    row: dict[str, Any] = {name: None for name in MODELS.columns}
    row.update(fields)
    for name in JSON_FIELDS:
        if isinstance(row[name], dict):
            row[name] = json.dumps(row[name], sort_keys=True)
    row.update(
        model_version=version,
        status=status,
        status_reason=reason,
        recorded_at=datetime.now(UTC),
    )
    table = pa.Table.from_pylist([row], schema=MODELS.schema)
    txn_version = version if app_id else None
    if spark is None:
        return lake.append_arrow(MODELS, table, app_id=app_id, txn_version=txn_version) is not None
    frame = spark.createDataFrame(table).coalesce(1)  # one data file per row: serving reads each file
    return lake.append_spark(MODELS, frame, app_id=app_id, txn_version=txn_version) is not None
