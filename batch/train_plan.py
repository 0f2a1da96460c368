"""Which model version a training run makes, from which events, and its ``training`` registry row.

A run claims its (model version, events version) in the registry before it writes
anything, so a killed run is resumed under the same versions and a scheduler's
re-run of a data interval (``run_key``) finds its model again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lambdarec import registry
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import EVENTS, ITEM_IDS, USER_IDS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SEED = 42  # ALS initialisation, the random holdout split and the tuning sample


def app_id(table: str) -> str:
    """The Delta app-transaction id this job writes ``table`` under."""
    return f"train-{table}"


def plan(
    lake: Lake, events_version: int | None, model_version: int | None, run_key: str | None = None
) -> tuple[int, int]:
    """(model_version, events_version) for this run.

    A run key already in the registry gets its own model and events versions
    back. An interrupted run (newest registry row ``training``) is resumed with its
    own events version; a pinned model version already in the registry keeps its
    events version; otherwise a new version trains on the given or latest events.
    """
    if run_key is not None and model_version is None:
        known = registry.find_run(lake, run_key)
        if known is not None:
            return known["model_version"], known["source_events_version"]
    statuses = registry.current_statuses(lake)
    if model_version is None:
        newest = max(statuses, default=None)
        if (
            newest is not None
            and statuses[newest]["status"] == registry.TRAINING
            and run_key is None
            and events_version in (None, statuses[newest]["source_events_version"])
        ):
            model_version = newest
        else:
            model_version = registry.next_model_version(lake)
    if events_version is None and model_version in statuses:
        events_version = statuses[model_version]["source_events_version"]
    if events_version is None:
        events_version = lake.version(EVENTS)
        if events_version is None:
            raise RuntimeError(f"no events table at {lake.uri(EVENTS)}: ingest events before training")
    return model_version, events_version


def recorded_params(settings: Settings, run_key: str | None) -> dict[str, Any]:
    """What shapes every candidate, as stored in the registry rows (the winner adds its own params)."""
    return {
        "families": list(settings.model_families),
        "event_weights": settings.event_weights,
        "decay_half_life_days": settings.decay_half_life_days,
        "rating_center": settings.rating_center,
        "split": settings.eval_split,
        "holdout_fraction": settings.holdout_fraction,
        "eval_cutoff": settings.eval_cutoff.isoformat() if settings.eval_cutoff else None,
        "eval_k": settings.eval_k,
        "id_mapping": [USER_IDS.name, ITEM_IDS.name],
        "run_key": run_key,
    }


def claim(
    lake: Lake,
    settings: Settings,
    events_version: int | None = None,
    model_version: int | None = None,
    run_key: str | None = None,
    spark: "SparkSession | None" = None,
) -> tuple[int, int, dict[str, Any]]:
    """Pin (model_version, events_version) and record the ``training`` row; no Spark needed
    (a Spark job passes its session and the row goes through delta-spark)."""
    model_version, events_version = plan(lake, events_version, model_version, run_key)
    base = {
        "source_events_version": events_version,
        "engine": ",".join(settings.als_engine if family == "als" else family for family in settings.model_families),
        "params": recorded_params(settings, run_key),
    }
    registry.record_status(
        lake, model_version, registry.TRAINING, "training started", app_id=app_id("models-training"), spark=spark, **base
    )
    return model_version, events_version, base
