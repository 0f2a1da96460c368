"""Lake housekeeping: compact small files, vacuum unreferenced ones, expire old models.

The speed layer appends many small files (one commit per micro-batch), which
slows every reader; compaction rewrites them into fewer, larger ones without
changing a row. Vacuum then deletes files no snapshot within the retention
window references (and files a killed Spark write left uncommitted). Expiry
removes the factor data and serving folders of models beyond the retention count; the champion is
always kept, and the registry keeps every model's history as ``expired`` rows.
All three are safe to re-run: a second pass finds nothing to do.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow.compute as pc
from deltalake import DeltaTable

from batch import registry
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import ALL_TABLES, ITEM_FACTORS, MODEL_INTERACTIONS, USER_FACTORS, TableSpec
from serving.model_build import remove_bundle

log = logging.getLogger("lambdarec.batch.maintenance")

EXPIRED = "expired"
MODEL_DATA = (USER_FACTORS, ITEM_FACTORS, MODEL_INTERACTIONS)


def compact(lake: Lake, specs: list[TableSpec] | None = None) -> dict[str, dict[str, Any]]:
    """Bin-pack each table's small files; returns delta-rs's figures per table that changed."""
    done = {}
    for spec in specs or list(ALL_TABLES.values()):
        if lake.exists(spec):
            figures = DeltaTable(lake.uri(spec)).optimize.compact()
            if figures.get("numFilesRemoved"):
                done[spec.name] = {k: figures[k] for k in ("numFilesAdded", "numFilesRemoved")}
    _log("compacted", tables=done)
    return done


def vacuum(lake: Lake, retention_hours: int, specs: list[TableSpec] | None = None) -> dict[str, int]:
    """Delete files unreferenced for ``retention_hours``; returns how many went per table.

    Readers pinned to a snapshot older than the window (a long training run) would
    lose their files, so keep the window above the longest run.
    """
    removed = {}
    for spec in specs or list(ALL_TABLES.values()):
        if lake.exists(spec):
            files = DeltaTable(lake.uri(spec)).vacuum(
                retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False
            )
            if files:
                removed[spec.name] = len(files)
    _log("vacuumed", retention_hours=retention_hours, tables=removed)
    return removed


def expirable(statuses: dict[int, dict[str, Any]], keep: int, champion: int | None) -> list[int]:
    """Model versions beyond the newest ``keep`` (never the champion), oldest first."""
    newest = sorted(statuses, reverse=True)[:keep]
    return sorted(v for v in statuses if v not in newest and v != champion and statuses[v]["status"] != EXPIRED)


def expire_models(lake: Lake, keep: int) -> list[int]:
    """Remove the factor data of models beyond the retention count; returns the versions expired."""
    champion = registry.latest_published(lake)
    versions = expirable(registry.current_statuses(lake), keep, champion and champion["model_version"])
    for version in versions:
        for spec in MODEL_DATA:
            only = pc.field("model_version") == version
            if lake.exists(spec) and lake.read_arrow(spec, filter=only).num_rows:
                DeltaTable(lake.uri(spec)).delete(f"model_version = {version}")
        remove_bundle(lake.settings, version)
        registry.record_status(lake, version, EXPIRED, f"beyond the retention of {keep} models")
    _log("models_expired", keep=keep, versions=versions)
    return versions


def run(settings: Settings, steps: tuple[str, ...] = ("compact", "vacuum", "expire")) -> dict[str, Any]:
    """The maintenance DAG's work, one step per task."""
    lake = Lake(settings)
    out: dict[str, Any] = {}
    if "compact" in steps:
        out["compacted"] = compact(lake)
    if "vacuum" in steps:
        out["vacuumed"] = vacuum(lake, settings.vacuum_retention_hours)
    if "expire" in steps:
        out["expired"] = expire_models(lake, settings.model_retention)
    return out


def _log(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))
