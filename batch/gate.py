"""The publish gate: a candidate model goes live only if it is sound and not worse.

A candidate is published when its factors hold no NaN, it covers enough of the
active users and items, it beats the popularity baseline on its own holdout, and
its gate metric is at least the champion's minus a tolerance. Anything else is
recorded as ``rejected`` with the reason, and serving keeps the champion.
Publishing writes the model's bundle into the lake (so servers map finished
arrays instead of building them), then one registry append, so it is atomic; the decision is keyed by the
app transaction ``(gate-<status>, model_version)``, so re-running it records nothing twice.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from lambdarec import registry
from lambdarec.lake import Lake
from lambdarec.model_bundle import ModelLoadError, publish_model_bundle
from lambdarec.settings import Settings
from schemas.tables import ITEM_FACTORS, ITEM_NEIGHBOURS, USER_FACTORS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("lambdarec.batch.gate")
DECIDED = (registry.PUBLISHED, registry.REJECTED)


def decide(metrics: dict[str, Any], champion: dict[str, Any] | None, settings: Settings) -> tuple[str, str]:
    """(status, reason) for a candidate with ``metrics`` against ``champion`` (a registry row)."""
    name = settings.gate_metric_name
    if metrics.get("nan_factors", 0):
        return registry.REJECTED, f"{metrics['nan_factors']} factor vectors hold NaN or inf"
    for kind in ("user", "item"):
        coverage, least = metrics.get(f"{kind}_coverage", 0.0), getattr(settings, f"gate_min_{kind}_coverage")
        if coverage < least:
            return registry.REJECTED, f"covers {coverage:.1%} of active {kind}s, below the {least:.0%} minimum"
    model, baseline = metrics.get(f"model_{name}"), metrics.get(f"popularity_{name}")
    if model is None or baseline is None:
        return registry.REJECTED, "no held-out events to evaluate on"
    if not model > baseline:
        return registry.REJECTED, f"does not beat popularity: {name} {model:.4f} vs {baseline:.4f}"
    if champion is None:
        return registry.PUBLISHED, f"first model; beats popularity: {name} {model:.4f} vs {baseline:.4f}"
    best = champion["metrics"].get(f"model_{name}")
    shown = "unscored" if best is None else f"{best:.4f}"
    verdict = f"{name} {model:.4f} vs champion v{champion['model_version']} {shown}"
    if best is not None and model < best - settings.gate_tolerance:
        return registry.REJECTED, f"worse than the champion beyond the {settings.gate_tolerance} tolerance: {verdict}"
    return registry.PUBLISHED, f"within {settings.gate_tolerance} of or above the champion: {verdict}"


def nan_vectors(lake: Lake, model_version: int) -> int:
    """Stored factor vectors or item weight rows of ``model_version`` holding NaN or inf (read back from the lake)."""
    bad = 0
    for spec, column in ((USER_FACTORS, "factors"), (ITEM_FACTORS, "factors"), (ITEM_NEIGHBOURS, "weights")):
        if not lake.exists(spec):
            continue
        factors = lake.read_arrow(spec, filter=pc.field("model_version") == model_version).column(column)
        for chunk in factors.chunks:
            values = chunk.flatten().to_numpy(zero_copy_only=False)
            lengths = pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
            if len(values):
                finite = np.isfinite(values)
                bad += int((np.add.reduceat(~finite, np.r_[0, np.cumsum(lengths)[:-1]]) > 0).sum())
    return bad


def run(lake: Lake, settings: Settings, model_version: int, spark: "SparkSession | None" = None) -> dict[str, Any]:
    """Publish or reject the candidate ``model_version``; a decided model is returned as is.

    Inside a Spark job (``spark`` given) the decision is appended through delta-spark."""
    current = registry.current_statuses(lake).get(model_version)
    if current is None:
        raise LookupError(f"model version {model_version} is not in the registry")
    if current["status"] in DECIDED:
        return _summary(current)
    if current["status"] != registry.CANDIDATE:
        raise RuntimeError(f"model version {model_version} is {current['status']}, not a candidate")
    metrics = json.loads(current["metrics"] or "{}")
    metrics["nan_factors"] = max(metrics.get("nan_factors", 0), nan_vectors(lake, model_version))
    champion = registry.latest_published(lake)
    status, reason = decide(metrics, champion, settings)
    fields = {name: current[name] for name in current if name not in ("model_version", "status", "status_reason", "recorded_at")}
    fields["metrics"] = metrics
    if status == registry.PUBLISHED:
        status, reason = _with_model_bundle(settings, {**current, "params": json.loads(current["params"] or "{}")}, reason)
    registry.record_status(lake, model_version, status, reason, app_id=f"gate-{status}", spark=spark, **fields)
    log.info(json.dumps({"event": "gate_decided", "model_version": model_version, "status": status, "reason": reason}))
    return _summary(registry.current_statuses(lake)[model_version])


def _with_model_bundle(settings: Settings, row: dict[str, Any], reason: str) -> tuple[str, str]:
    """Write the model's bundle into the lake before it is published; a model serving
    could not load is rejected instead."""
    try:
        seconds = publish_model_bundle(settings, row)
    except ModelLoadError as exc:
        return registry.REJECTED, f"serving cannot load it: {exc}"
    log.info(json.dumps({"event": "model_bundle_written", "model_version": row["model_version"], "seconds": round(seconds, 2)}))
    return registry.PUBLISHED, reason


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"model_version": row["model_version"], "status": row["status"], "status_reason": row["status_reason"]}
