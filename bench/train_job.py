"""Benchmark: the whole training job (``batch.train.run``: split, families, tuning, refit, tables,
gate) on a generated lake, wall time per run, at the current defaults or with overrides.

For each size it writes one lake of that many events (``deploy.generator.World``:
planted clusters, power-law users; the same shapes as ``bench/train.py``), runs
the job ``--repeats`` times on it (each run a new model version on the same
events) and prints ONE JSON object: per size the wall times, their median, and
the published model's engine and holdout figures. Settings come from the
environment like any run's (``LAMBDAREC_*``) plus ``--set name=value``, so one
script times the defaults and any other profile:

    .venv/bin/python bench/train_job.py --sizes 1m 10m [--repeats 3] [--set tune_trials=0 ...]

Run it from an older checkout (``PYTHONPATH=<checkout>``) to time that checkout's defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.train import SIZES  # noqa: E402  (events -> users, items, clusters: one set of sizes for both benches)
from deploy.generator import World  # noqa: E402
from lambdarec.lake import Lake  # noqa: E402
from lambdarec.settings import Settings  # noqa: E402
from schemas.tables import EVENTS  # noqa: E402

TYPES = np.array(["view", "click", "add_to_cart", "purchase"])
END = datetime(2025, 3, 1, tzinfo=UTC)
CHUNK = 2_000_000  # events per lake commit: bounded Arrow memory


def write_events(lake: Lake, size: str, seed: int) -> None:
    """``size`` events as the speed layer would have landed them, built column-wise in chunks."""
    n, n_users, n_items, n_clusters = SIZES[size]
    users, items = World(n_users, n_items, n_clusters, seed).interactions(n)
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(TYPES), n, p=[0.7, 0.2, 0.07, 0.03])
    seconds = rng.integers(0, 30 * 86_400, n)
    for start in range(0, n, CHUNK):
        part = slice(start, min(start + CHUNK, n))
        occurred = pa.array(
            np.datetime64(END.replace(tzinfo=None), "us") - seconds[part].astype("timedelta64[s]"),
            pa.timestamp("us"),
        ).cast(EVENTS.schema.field("occurred_at").type)
        count = len(occurred)
        lake.append_arrow(EVENTS, pa.table({
            "event_id": pa.array(np.char.add("e", np.arange(part.start, part.stop).astype(str))),
            "user_id": pa.array(np.char.add("u_", users[part].astype(str))),
            "item_id": pa.array(np.char.add("item-", items[part].astype(str))),
            "event_type": pa.array(TYPES[kinds[part]]),
            "value": pa.nulls(count, pa.float64()),
            "occurred_at": occurred,
            "received_at": occurred,
            "device": pa.nulls(count, pa.string()),
            "country": pa.nulls(count, pa.string()),
            "context": pa.nulls(count, EVENTS.schema.field("context").type),
            "kafka_topic": pa.nulls(count, pa.string()),
            "kafka_partition": pa.nulls(count, pa.int32()),
            "kafka_offset": pa.nulls(count, pa.int64()),
            "event_date": pc.cast(occurred, pa.date32()),
        }, schema=EVENTS.schema))


def override(pairs: list[str]) -> dict[str, Any]:
    """``name=value`` pairs, values read as JSON where they parse (numbers, lists), else as text."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            fields[name] = json.loads(text)
        except ValueError:
            fields[name] = text
    return fields


def bench_size(size: str, repeats: int, seed: int, fields: dict[str, Any]) -> dict:
    from batch import train
    from lambdarec.spark import build_spark

    with tempfile.TemporaryDirectory(prefix="bench-train-job-") as root:
        settings = Settings(root=Path(root)).model_copy(update=fields)  # the environment, then --set
        lake = Lake(settings)
        started = time.perf_counter()
        write_events(lake, size, seed)
        written_s = time.perf_counter() - started
        spark = build_spark(settings, "bench-train-job")
        runs: list[dict[str, Any]] = []
        try:
            for _ in range(repeats):
                started = time.perf_counter()
                summary = train.run(spark, settings)
                runs.append({"wall_s": round(time.perf_counter() - started, 1), "summary": summary})
        finally:
            spark.stop()
    last = runs[-1]["summary"]
    metrics = last.get("metrics", {})
    return {
        "events": SIZES[size][0],
        "events_written_s": round(written_s, 1),
        "wall_s": [run["wall_s"] for run in runs],
        "median_wall_s": statistics.median(run["wall_s"] for run in runs),
        "engine": last.get("engine"),
        "status": last.get("status"),
        "n_interactions": last.get("n_interactions"),
        "holdout": {name: round(value, 4) for name, value in metrics.items()
                    if name.startswith(("model_", "popularity_")) and name.endswith(("ndcg_at_10", "recall_at_10"))},
        "families": [{name: value for name, value in entry.items() if name != "tuning"}
                     for entry in metrics.get("families", [])],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=["1m"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--set", dest="fields", action="append", default=[], metavar="NAME=VALUE",
                        help="A settings field for every run (repeatable).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)  # the job's events
    fields = override(args.fields)
    out = {"settings": fields, "sizes": {size: bench_size(size, args.repeats, args.seed, fields) for size in args.sizes}}
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
