"""Lake housekeeping, a Spark job: prune the speed tables, compact small files, vacuum unreferenced
ones, expire old models.

``run`` holds the logic on an injected session; ``main`` is the spark-submit entry
(``spark-submit batch/maintenance.py [--step prune|compact|vacuum|expire ...]``), which
the maintenance DAG runs one step per task.

The speed tables grow with every micro-batch, and serving reads them at start.
The prune deletes (a Delta ``DELETE``) their rows older than the speed view's
horizon (``speed_view_horizon_s``, by each table's time column), so that what
serving's start-up reads is bounded by the horizon, not by history: a published
model holds what the prune removes. Compaction then rewrites what is left, and the
vacuum deletes the pruned files once they are past its retention.

The speed layer appends many small files (one commit per micro-batch), which
slows every reader; compaction (Delta's ``OPTIMIZE``) rewrites them into fewer,
larger ones without changing a row. ``VACUUM`` then deletes files no snapshot
within the retention window references (and files a killed Spark write left
uncommitted). Expiry deletes (a Delta ``DELETE``) the factor data of models beyond
the retention count and their model bundles; the champion is always kept, and
the registry keeps every model's history as ``expired`` rows. Deletion vectors are
off, so a DELETE rewrites files and every table stays readable by delta-rs.
All four are safe to re-run: a second pass finds nothing to do.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lambdarec import registry
from lambdarec.lake import Lake, session_conf, spark_path
from lambdarec.model_bundle import remove_model_bundle
from lambdarec.settings import Settings
from schemas.tables import (
    ALL_TABLES,
    ITEM_FACTORS,
    ITEM_NEIGHBOURS,
    MODEL_INTERACTIONS,
    SPEED_HORIZON_COLUMNS,
    SPEED_ITEM_TRENDING,
    USER_FACTORS,
    TableSpec,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("lambdarec.batch.maintenance")

EXPIRED = "expired"
MODEL_DATA = (USER_FACTORS, ITEM_FACTORS, ITEM_NEIGHBOURS, MODEL_INTERACTIONS)
STEPS = ("prune", "compact", "vacuum", "expire")
DELTA_DEFAULT_RETENTION_HOURS = 168  # below this, delta-spark refuses a VACUUM unless its check is off


def prune_speed(spark: "SparkSession", lake: Lake, now: datetime | None = None) -> dict[str, int]:
    """Delete the speed tables' rows older than the speed view's horizon before ``now`` (the trending
    table keeps at least one trending window); returns the rows removed per table."""
    settings = lake.settings
    now = now or datetime.now(UTC)
    removed = {}
    for name, column in SPEED_HORIZON_COLUMNS.items():
        spec = ALL_TABLES[name]
        if not lake.exists(spec):
            continue
        kept_s = settings.speed_view_horizon_s
        if spec is SPEED_ITEM_TRENDING:
            kept_s = max(kept_s, settings.speed_trending_window_s)
        cutoff = now - timedelta(seconds=kept_s)
        old = pc.field(column) < pa.scalar(cutoff, spec.schema.field(column).type)
        count = lake.dataset(spec).count_rows(filter=old)
        if count:
            micros = (cutoff - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
            lake.delete_spark(spark, spec, f"`{column}` < timestamp_micros({micros})")
            removed[name] = count
    _log("pruned", horizon_s=settings.speed_view_horizon_s, before=now.isoformat(), tables=removed)
    return removed


def compact(spark: "SparkSession", lake: Lake, specs: list[TableSpec] | None = None) -> dict[str, dict[str, int]]:
    """``OPTIMIZE`` (bin-packing) each table; returns the file counts per table that changed."""
    from delta.tables import DeltaTable

    done = {}
    for spec in specs or list(ALL_TABLES.values()):
        if not lake.exists(spec):
            continue
        result = DeltaTable.forPath(spark, spark_path(lake.uri(spec))).optimize().executeCompaction().first()
        assert result is not None  # OPTIMIZE returns one row of metrics
        metrics = result["metrics"]
        if metrics["numFilesRemoved"]:
            done[spec.name] = {"numFilesAdded": metrics["numFilesAdded"], "numFilesRemoved": metrics["numFilesRemoved"]}
    _log("compacted", tables=done)
    return done


def vacuum(
    spark: "SparkSession", lake: Lake, retention_hours: int, specs: list[TableSpec] | None = None
) -> dict[str, int]:
    """``VACUUM`` files unreferenced for ``retention_hours``; returns how many went per table.

    Readers pinned to a snapshot older than the window (a long training run) would
    lose their files, so keep the window above the longest run. Delta's own check
    against windows below 7 days is turned off for this call only. File listing runs
    in as many tasks as the shuffle (Spark's default of up to 10,000 tasks made a
    tiny table's vacuum take ~36 s instead of ~4 s on two cores).
    """
    conf = {"spark.sql.sources.parallelPartitionDiscovery.parallelism": str(max(2, lake.settings.spark_shuffle_partitions))}
    if retention_hours < DELTA_DEFAULT_RETENTION_HOURS:
        conf["spark.databricks.delta.retentionDurationCheck.enabled"] = "false"
    removed = {}
    with session_conf(spark, conf):
        for spec in specs or list(ALL_TABLES.values()):
            if not lake.exists(spec):
                continue
            before = lake.version(spec)
            spark.sql(f"VACUUM delta.`{spark_path(lake.uri(spec))}` RETAIN {int(retention_hours)} HOURS").collect()
            files = _vacuumed_files(lake, spec, before)
            if files:
                removed[spec.name] = files
    _log("vacuumed", retention_hours=retention_hours, tables=removed)
    return removed


def _vacuumed_files(lake: Lake, spec: TableSpec, before: int | None) -> int:
    """Files deleted, as the ``VACUUM END`` commit made after version ``before`` records them."""
    for entry in lake.open(spec).history(4):
        if entry["version"] > (before if before is not None else -1) and entry.get("operation") == "VACUUM END":
            return int((entry.get("operationMetrics") or {}).get("numDeletedFiles", 0))
    return 0


def expirable(statuses: dict[int, dict[str, Any]], keep: int, champion: int | None) -> list[int]:
    """Model versions beyond the newest ``keep`` (never the champion), oldest first."""
    newest = sorted(statuses, reverse=True)[:keep]
    return sorted(v for v in statuses if v not in newest and v != champion and statuses[v]["status"] != EXPIRED)


def expire_models(spark: "SparkSession", lake: Lake, keep: int) -> list[int]:
    """Delete the factor data of models beyond the retention count; returns the versions expired."""
    champion = registry.latest_published(lake)
    versions = expirable(registry.current_statuses(lake), keep, champion["model_version"] if champion else None)
    for version in versions:
        for spec in MODEL_DATA:
            only = pc.field("model_version") == version
            if lake.exists(spec) and lake.read_arrow(spec, filter=only).num_rows:
                lake.delete_spark(
                    spark, spec, f"model_version = {int(version)}", app_id=f"expire-{spec.name}", txn_version=version
                )
        remove_model_bundle(lake.settings, version)
        registry.record_status(
            lake, version, EXPIRED, f"beyond the retention of {keep} models", app_id="maintenance-expired", spark=spark
        )
    _log("models_expired", keep=keep, versions=versions)
    return versions


def run(spark: "SparkSession", settings: Settings, steps: tuple[str, ...] = STEPS) -> dict[str, Any]:
    """The maintenance DAG's work, one step per task."""
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown maintenance steps {sorted(unknown)}; choose from {list(STEPS)}")
    lake = Lake(settings)
    out: dict[str, Any] = {}
    if "prune" in steps:
        out["pruned"] = prune_speed(spark, lake)
    if "compact" in steps:
        out["compacted"] = compact(spark, lake)
    if "vacuum" in steps:
        out["vacuumed"] = vacuum(spark, lake, settings.vacuum_retention_hours)
    if "expire" in steps:
        out["expired"] = expire_models(spark, lake, settings.model_retention)
    return out


def _log(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="batch/maintenance.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--step",
        dest="steps",
        action="append",
        choices=STEPS,
        help="Run this step (repeatable; default: all, in order).",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """spark-submit entry point: wiring only."""
    from lambdarec.spark import build_spark

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    settings = Settings()
    spark = build_spark(settings, "lambdarec-maintenance")
    try:
        summary = run(spark, settings, tuple(args.steps or STEPS))
    finally:
        spark.stop()
    print(json.dumps(summary, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
