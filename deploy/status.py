"""``lambdarec status``: where the speed queries stand and which model is published.

It reads only the lake (``speed_progress`` and the ``models`` registry), so it
works whether or not the speed job, the broker or serving are running, and
needs no Spark.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

import pyarrow.compute as pc

from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import SPEED_PROGRESS

PROGRESS_COLUMNS = ("rows_in", "input_rows_per_s", "processed_rows_per_s", "batch_duration_ms", "source_lag",
                    "watermark")


def latest_progress(lake: Lake) -> dict[str, dict[str, Any]]:
    """Per speed query name, its newest progress row (the newest run's highest batch)."""
    table = lake.read_arrow(SPEED_PROGRESS)
    if not table.num_rows:
        return {}
    order = pc.sort_indices(table, sort_keys=[("recorded_at", "descending"), ("batch_id", "descending")])
    latest: dict[str, dict[str, Any]] = {}
    for row in table.take(order).to_pylist():
        latest.setdefault(row["query_name"] or row["query_id"], row)
    return latest


def collect(settings: Settings) -> dict[str, Any]:
    """The status as one JSON-ready object."""
    from lambdarec.registry import latest_published

    lake = Lake(settings)
    model = latest_published(lake)
    now = dt.datetime.now(dt.timezone.utc)
    queries = {
        name: {**row, "age_s": round((now - row["recorded_at"]).total_seconds(), 1)}
        for name, row in latest_progress(lake).items()
    }
    published = None if model is None else {
        key: model.get(key) for key in ("model_version", "recorded_at", "source_events_version", "engine", "metrics")
    }
    return {"lake": lake.root, "speed": queries, "published_model": published}


def render_table(status: dict[str, Any]) -> str:
    """A plain-text table of the same figures."""
    lines = [f"lake: {status['lake']}", "", "speed queries:"]
    header = ("query", "batch", *PROGRESS_COLUMNS, "age_s")
    rows = [header] + [
        (name, q["batch_id"], *(_cell(q[c]) for c in PROGRESS_COLUMNS), q["age_s"])
        for name, q in sorted(status["speed"].items())
    ]
    if len(rows) == 1:
        lines.append("  (no progress recorded yet: is the speed job running?)")
    else:
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        lines += ["  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    model = status["published_model"]
    lines += ["", "published model: " + ("none" if model is None else
              f"v{model['model_version']} from events v{model['source_events_version']} ({model['engine']}), "
              f"published {_cell(model['recorded_at'])}, metrics {json.dumps(model['metrics'])}")]
    return "\n".join(lines)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 1)
    if hasattr(value, "isoformat"):
        return value.isoformat(timespec="seconds")
    return "-" if value is None else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("json", "table"), default="table", help="Output format.")


def command(args: argparse.Namespace, settings: Settings) -> int:
    status = collect(settings)
    print(json.dumps(status, default=_cell, indent=2) if args.format == "json" else render_table(status))
    return 0
