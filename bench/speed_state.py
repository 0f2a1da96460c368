"""Benchmark: what the erasure settings of the features query's state cost per micro-batch.

An erased user's state leaves the features query's checkpoint within a bounded time
only if each commit compacts RocksDB and few state versions are kept
(``lambdarec.speed_state_retention``). This runs the real features query (Spark
``local[2]``, RocksDB, the embedded broker for its pushes) twice on the same lake,
each from a fresh checkpoint: once with Spark's defaults (no compaction on commit,
100 versions kept) and once with the erasure settings. Each run first builds the
state from --events events (--users users, --items items), then takes --batches
micro-batches of --batch new events each, one at a time, and reports per batch the
trigger's duration, the state commit's and its compaction's time, and at the end
the size of the checkpoint's state folder. It prints one JSON record and writes it,
dated, under --records (host, cores, commit, settings, figures); never a pass/fail.

    flock /tmp/lambdarec-heavy.lock .venv/bin/python bench/speed_state.py [--users 100000] [--batches 20]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock


PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from batch.erasure import DELTA_END_INDEX  # noqa: E402
from bench import records  # noqa: E402
from lambdarec import speed_state_retention  # noqa: E402
from lambdarec.checkpoint_files import CheckpointFiles  # noqa: E402
from deploy.embedded.broker import EmbeddedBroker  # noqa: E402
from deploy.generator import bronze_table, generate_events  # noqa: E402
from lambdarec.lake import Lake  # noqa: E402
from lambdarec.processes import StageError, wait_for  # noqa: E402
from lambdarec.settings import Settings  # noqa: E402
from lambdarec.spark import build_spark  # noqa: E402
from schemas.tables import EVENTS  # noqa: E402
from speed.job import JOB_CONF, features_checkpoint_location, run_features  # noqa: E402

SPARK_DEFAULTS = {"spark.sql.streaming.minBatchesToRetain": "100",
                  "spark.sql.streaming.stateStore.rocksdb.compactOnCommit": "false"}
WAIT_S = 600


def features_batches(spark, settings: Settings, lake: Lake, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Run the features query from a fresh checkpoint: build the state, then time --batches batches."""
    shutil.rmtree(features_checkpoint_location(settings), ignore_errors=True)
    query = run_features(spark, settings)
    files, events_id = CheckpointFiles(spark, features_checkpoint_location(settings)), str(lake.open(EVENTS).metadata().id)
    try:
        wait_read(query, files, events_id, lake.version(EVENTS) or 0)
        built = speed_state_retention.latest_batch(files)
        for n in range(args.batches):
            events = generate_events(args.batch, args.users, args.items, 6, seed=seed + n, end=datetime.now(UTC))
            version = lake.append_arrow(EVENTS, bronze_table(events, settings))
            assert version is not None  # an append without an app transaction always commits
            wait_read(query, files, events_id, version)
        last = speed_state_retention.latest_batch(files)
        wait_for(lambda: any(p["batchId"] == last for p in query.recentProgress), WAIT_S,  # reported after the commit
                 f"the progress of batch {last}", interval_s=0.2)
        every = query.recentProgress
    finally:
        query.stop()
    built_ms = sum(p["durationMs"].get("triggerExecution", 0) for p in every if p["batchId"] <= (built or 0))
    progress = [p for p in every if p["batchId"] > (built or 0) and p["numInputRows"]]
    state = Path(features_checkpoint_location(settings), "state")
    operators = [p["stateOperators"][0] for p in progress]
    return {
        "build_state_ms": built_ms,
        "batches": len(progress),
        "trigger_ms": summary([p["durationMs"]["triggerExecution"] for p in progress]),
        "commit_ms": summary([o["commitTimeMs"] for o in operators]),
        "compact_ms": summary([o["customMetrics"].get("rocksdbCommitCompactLatency", 0) for o in operators]),
        "state_keys": operators[-1]["numRowsTotal"] if operators else None,
        "state_folder_mb": round(sum(f.stat().st_size for f in state.rglob("*") if f.is_file()) / 2**20, 1),
        "state_versions_on_disk": len(list(state.rglob("*.zip"))),
    }


def wait_read(query, files: CheckpointFiles, table_id: str, version: int) -> None:
    """Until the query has committed a batch that read ``events`` through ``version`` (as the erasure job checks)."""
    def read(source: Any) -> bool:
        if not isinstance(source, dict) or source.get("reservoirId") != table_id:
            return False
        at = int(source["reservoirVersion"])
        return at > version or (at == version and int(source["index"]) >= DELTA_END_INDEX)

    def caught_up() -> bool:
        if query.exception() is not None:
            raise StageError(f"the features query failed: {query.exception()}")
        return any(read(source) for source in files.committed_offsets() or [])

    wait_for(caught_up, WAIT_S, f"the features query to read events version {version}", interval_s=0.2)


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None, "max": None}
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "max": ordered[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="Events the state is built from.")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=2_000, help="New events per timed micro-batch.")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--records", type=Path, default=records.RECORDS)
    args = parser.parse_args(argv)
    record = records.start("speed_state", vars(args))
    with tempfile.TemporaryDirectory(prefix="lambdarec-bench-state-") as tmp, \
            EmbeddedBroker(Settings(root=Path(tmp), allow_development_key=True)) as broker:
        settings = broker.settings.model_copy(update={"spark_shuffle_partitions": 2, "speed_features_trigger_ms": 500})
        record["settings"] = {name: getattr(settings, name) for name in (
            "speed_state_versions_kept", "speed_state_maintenance_s", "speed_features_partitions")}
        lake = Lake(settings)
        lake.append_arrow(EVENTS, bronze_table(generate_events(args.events, args.users, args.items, 6, seed=1,
                                                               end=datetime.now(UTC)), settings))
        spark = build_spark(settings.model_copy(update={"spark_master": "local[2]"}), "bench-speed-state", JOB_CONF)
        try:
            with mock.patch.object(speed_state_retention, "features_conf", lambda _settings: SPARK_DEFAULTS):
                spark_defaults = features_batches(spark, settings, lake, args, seed=1000)
            erasure_settings = features_batches(spark, settings, lake, args, seed=1000)
        finally:
            spark.stop()
    record["figures"] = {"spark_defaults": spark_defaults, "erasure_settings": erasure_settings,
                         "erasure_settings_conf": speed_state_retention.features_conf(settings)}
    records.write(record, args.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
