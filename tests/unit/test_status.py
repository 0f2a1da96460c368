"""``lambdarec status``: the newest progress per speed query and the published model, from the lake."""

from __future__ import annotations

import argparse
import datetime as dt
import json

import pyarrow as pa
import pytest

from lambdarec.lake import Lake
from deploy.status import collect, command, render_table
from schemas.tables import SPEED_PROGRESS

pytestmark = pytest.mark.unit

NOW = dt.datetime.now(dt.timezone.utc)


def progress(query_name: str, batch_id: int, lag: int, seconds_ago: float) -> dict:
    return {
        "query_id": f"id-{query_name}", "query_name": query_name, "run_id": "r", "batch_id": batch_id,
        "recorded_at": NOW - dt.timedelta(seconds=seconds_ago), "rows_in": 10 * batch_id,
        "input_rows_per_s": 100.0, "processed_rows_per_s": 120.5, "batch_duration_ms": 80, "source_lag": lag,
        "watermark": None,
    }


def test_status_shows_each_querys_newest_batch(settings, capsys):
    rows = [progress("lambdarec_speed", 1, 50, 5), progress("lambdarec_speed", 2, 7, 1),
            progress("lambdarec_speed_features", 4, 0, 2)]
    Lake(settings).append_arrow(SPEED_PROGRESS, pa.Table.from_pylist(rows, schema=SPEED_PROGRESS.schema))

    status = collect(settings)
    assert {name: (q["batch_id"], q["source_lag"]) for name, q in status["speed"].items()} == {
        "lambdarec_speed": (2, 7), "lambdarec_speed_features": (4, 0)}
    assert status["published_model"] is None

    assert command(argparse.Namespace(format="json"), settings) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["speed"]["lambdarec_speed"]["rows_in"] == 20
    table = render_table(status)
    assert "lambdarec_speed_features" in table and "published model: none" in table


def test_status_before_any_progress_says_so(settings):
    assert "no progress recorded yet" in render_table(collect(settings))
