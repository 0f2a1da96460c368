"""Serving's /metrics: freshness from the speed view, model and training gauges from the registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from serving.metrics_text import samples as parse
from schemas.tables import MODELS
from serving.metrics import Metrics

pytestmark = pytest.mark.unit


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    return parse(metrics.render().decode())


def registry(*rows: tuple[int, str, float, dict | None]) -> pa.Table:
    """Registry rows (version, status, hours ago, metrics)."""
    now = datetime.now(UTC)
    return pa.Table.from_pylist(
        [{"model_version": v, "status": status, "recorded_at": now - timedelta(hours=ago),
          "metrics": None if metrics is None else json.dumps(metrics)} for v, status, ago, metrics in rows],
        schema=MODELS.schema)


def test_model_age_gate_decisions_and_the_newest_runs_stages_and_metrics():
    metrics = Metrics()
    trained = {"model_ndcg_at_10": 0.31, "popularity_ndcg_at_10": 0.12, "families": {"als": {}},
               "stage_seconds": {"prepare": 3.5, "evaluate": 20.0, "refit": 6.0, "write": 2.0}}
    rows = registry((1, "training", 3.0, None), (1, "candidate", 2.9, {"model_ndcg_at_10": 0.2}),
                    (1, "published", 2.0, None), (2, "training", 1.0, None), (2, "candidate", 0.9, trained),
                    (2, "rejected", 0.8, None))
    metrics.observe_registry(rows, serving_version=1)
    got = samples(metrics)
    assert 2 * 3600 - 60 < got[("lambdarec_model_age_seconds", ())] < 2 * 3600 + 60
    assert got[("lambdarec_training_last_published", ())] == 0  # version 2 was rejected
    assert got[("lambdarec_models", (("status", "published"),))] == 1
    assert got[("lambdarec_models", (("status", "rejected"),))] == 1
    assert got[("lambdarec_training_stage_seconds", (("stage", "evaluate"),))] == 20.0
    assert got[("lambdarec_training_metric", (("metric", "model_ndcg_at_10"),))] == 0.31
    assert not [key for key in got if key[0] == "lambdarec_training_metric" and "families" in str(key)]

    metrics.observe_registry(registry(), serving_version=None)  # an empty registry: every gauge says "none"
    got = samples(metrics)
    assert got[("lambdarec_model_age_seconds", ())] == -1 and got[("lambdarec_training_last_published", ())] == -1
    assert not [key for key in got if key[0] in ("lambdarec_models", "lambdarec_training_stage_seconds")]


def test_freshness_is_a_histogram_of_seconds():
    metrics = Metrics()
    for seconds in (0.2, 0.4, 3.0):
        metrics.freshness.observe(seconds)
    got = samples(metrics)
    assert got[("lambdarec_freshness_seconds_count", ())] == 3
    assert got[("lambdarec_freshness_seconds_bucket", (("le", "0.5"),))] == 2
