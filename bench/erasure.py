"""Benchmark: time from an erasure request to its completed receipt, on a lake of N events (10M default).

Builds an ``events`` table of --events rows (--users users, --items items, over
--days days, written in 1M-row commits as a busy lake would hold them), plus a
published model's tables for --model-users users, then for each of --runs
different users (each holding about the median number of events) records an
erasure request (then --heavy-runs more, of heavy users) and runs the erasure job on it in this process (the code
``spark-submit batch/erasure.py`` runs, Spark ``local[2]``). No speed job runs, so
the job does not wait for one; the embedded broker runs, since each receipt reads
how long the topics keep records from it. Prints ONE JSON object: per run the seconds from
the request to the receipt and the rows removed, and the median over the median users. In production
add the scheduler's delay (the privacy DAG runs every 10 minutes).

    .venv/bin/python bench/erasure.py [--events 10000000] [--runs 3] [--root DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch import erasure  # noqa: E402
from bench import records
from lambdarec import privacy  # noqa: E402
from deploy.embedded.broker import EmbeddedBroker  # noqa: E402
from lambdarec.lake import Lake  # noqa: E402
from lambdarec.pseudonym import pseudonymise  # noqa: E402
from lambdarec.settings import Settings  # noqa: E402
from lambdarec.spark import build_spark  # noqa: E402
from schemas.tables import EVENTS, PRIVACY_REQUESTS  # noqa: E402
from tests.support.serving import write_model  # noqa: E402

CHUNK = 1_000_000
EVENT_TYPES = np.array(["view", "click", "add_to_cart", "purchase"])


def build_lake(settings: Settings, args: argparse.Namespace) -> tuple[Lake, list[str], np.ndarray]:
    """The events table, written chunk by chunk; the users' pseudonyms and their event counts."""
    lake = Lake(settings)
    rng = np.random.default_rng(7)
    users = np.array([pseudonymise(f"user-{n}", settings.pseudonym_key) for n in range(args.users)])
    items = np.array([f"item-{n}" for n in range(args.items)])
    counts = np.zeros(args.users, dtype=np.int64)
    end = datetime(2026, 11, 30, tzinfo=UTC)
    start_us = int((end - timedelta(days=args.days)).timestamp() * 1e6)
    span_us = int(args.days * 86_400e6)
    for first in range(0, args.events, CHUNK):
        n = min(CHUNK, args.events - first)
        who = np.minimum(rng.zipf(1.3, n) - 1, args.users - 1)  # a long tail of light users
        who = rng.permutation(args.users)[who]
        counts += np.bincount(who, minlength=args.users)
        at = np.sort(start_us + rng.integers(0, span_us, n))
        occurred = pa.array(at, pa.timestamp("us", tz="UTC"))
        table = pa.table({
            "event_id": pa.array([str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**62, n)]),
            "user_id": pa.array(users[who]),
            "item_id": pa.array(items[rng.integers(0, args.items, n)]),
            "event_type": pa.array(EVENT_TYPES[rng.integers(0, len(EVENT_TYPES), n)]),
            "value": pa.nulls(n, pa.float64()),
            "occurred_at": occurred,
            "received_at": occurred,
            "device": pa.array(np.where(rng.random(n) < 0.5, "web", "ios")),
            "country": pa.array(np.where(rng.random(n) < 0.5, "DE", "FR")),
            "context": pa.nulls(n, pa.map_(pa.string(), pa.string())),
            "kafka_topic": pa.array(["events"] * n),
            "kafka_partition": pa.array(np.zeros(n, dtype=np.int32)),
            "kafka_offset": pa.array(np.arange(first, first + n, dtype=np.int64)),
            "event_date": pa.array((at // 86_400_000_000).astype(np.int32), pa.date32()),
        }, schema=EVENTS.schema)
        lake.append_arrow(EVENTS, table)
    model_users = users[np.argsort(-counts)[: args.model_users]]
    vectors = {f"item-{n}": rng.random(16).tolist() for n in range(min(args.items, 2000))}
    write_model(lake, 1, lake.version(EVENTS), vectors,
                {u: {"item-1": 1.0, "item-2": 2.0} for u in model_users})
    return lake, list(users), counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--model-users", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3, help="Erasures of users with the median event count.")
    parser.add_argument("--heavy-runs", type=int, default=1, help="Then erasures of heavy users (the 101st-heaviest on).")
    parser.add_argument("--root", type=Path, help="Lake root (default: a temporary folder, removed after).")
    parser.add_argument("--records", type=Path, default=records.RECORDS, help="Where the dated record goes.")
    args = parser.parse_args()
    record = records.start("erasure", vars(args))
    with tempfile.TemporaryDirectory(prefix="lambdarec-bench-erasure-") as tmp, \
            EmbeddedBroker(Settings(root=args.root or Path(tmp))) as broker:
        settings = broker.settings.model_copy(update={"spark_shuffle_partitions": 2})
        started = time.perf_counter()
        lake, users, counts = build_lake(settings, args)
        build_s = time.perf_counter() - started
        lake.ensure(PRIVACY_REQUESTS)
        typical = np.argsort(np.abs(counts - np.median(counts[counts > 0])) + (counts == 0) * 10**9)
        heavy = np.argsort(-counts)[100:]  # past the very top: users with events in most files
        picked = [("median_user", i) for i in typical[: args.runs]] + [("heavy_user", i) for i in heavy[: args.heavy_runs]]
        spark = build_spark(settings, "bench-erasure")
        runs = []
        try:
            for run, (kind, index) in enumerate(picked):
                # every event was read from partition 0 of the topic, below offset --events
                request = privacy.record_erasure(lake, users[index], f"bench-{run}", "cli", {0: args.events})
                began = time.perf_counter()
                receipt = erasure.erase(spark, settings, request)
                seconds = time.perf_counter() - began
                runs.append({"user": kind, "seconds_to_receipt": round(seconds, 2), "user_events": int(counts[index]),
                             "removed": receipt["removed"],
                             "receipt_span_s": round((receipt["completed_at"] - receipt["received_at"]).total_seconds(), 2)})
        finally:
            spark.stop()
        records.write({**record, "figures": {
            "events": args.events, "users": args.users, "build_s": round(build_s, 1),
            "median_seconds_to_receipt": statistics.median(r["seconds_to_receipt"] for r in runs
                                                           if r["user"] == "median_user"),
            "runs": runs, "spark_master": settings.spark_master,
        }}, args.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
