"""Ingestion benchmark: events accepted per second through ``POST /v1/events/batch``, and one event's latency.

Starts the embedded broker and ``lambdarec serve`` (one worker per core unless --workers says) in
a temporary root and drives
them with ``wrk`` (``make bench-tools``; C, so it takes little of the CPU it
measures) and ``bench/wrk/bodies.lua``, which posts request bodies prepared
beforehand from the generator's events:

- single: one connection posting one event per request for --seconds; wrk's
  p50/p99 latency (``single_event_ms``);
- batches: --connections connections posting --batch events per request for
  --seconds, --runs times; events accepted per second, from serving's own
  ``lambdarec_ingested_events_total{outcome="accepted"}`` over wrk's duration
  (``accepted_events_per_s``, median and each run).

Once the requests wrk left in flight have finished, every accepted event must be
on the events topic: the topic's records equal the accepted count (``on_topic``,
``accepted``). The producer is the API's (acks=all, idempotent). Prints one JSON
object.

    .venv/bin/python bench/ingest.py [--connections 16] [--batch 500] [--seconds 15] [--runs 3] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from kafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import records
from lambdarec import api_keys  # noqa: E402
from deploy.embedded.broker import EmbeddedBroker  # noqa: E402
from deploy.generator import World, live_days  # noqa: E402
from lambdarec.kafka_io import make_consumer, partition_end_offsets  # noqa: E402
from serving.metrics_text import samples  # noqa: E402
from lambdarec.processes import free_port, start_child, wait_for  # noqa: E402
from deploy.cli import lambdarec_command
from lambdarec.settings import Settings  # noqa: E402
from lambdarec.submit import spark_submit_env  # noqa: E402
from serving.workers import worker_count  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "wrk" / "bodies.lua"
BODIES = 200  # distinct request bodies per file; wrk cycles through them
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def write_bodies(path: Path, batch: int, seed: int, days: float) -> None:
    """``BODIES`` JSON arrays of ``batch`` events each, one per line, spread over the last ``days``."""
    events = World(n_users=10_000, n_items=5_000, n_clusters=10, seed=seed).events(BODIES * batch, days=days)
    with path.open("w") as out:
        for _ in range(BODIES):
            out.write(json.dumps([next(events) for _ in range(batch)]) + "\n")


def wrk(url: str, bodies: Path, connections: int, seconds: int, env: dict[str, str]) -> dict:
    """Run wrk (with ``env``: its LAMBDAREC_API_KEY is the key it sends); its requests, duration, non-2xx count
    and latency percentiles."""
    threads = min(connections, 2)
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(SCRIPT), url, "--",
         str(bodies)], capture_output=True, text=True, check=True, env=env).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    if done is None:
        raise RuntimeError(f"wrk printed no totals:\n{output}")
    duration_s = float(done.group(2)) * UNITS_MS[done.group(3)] / 1000
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    latency = {f"p{p}": round(float(v) * UNITS_MS[u], 2)
               for p, v, u in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)}
    return {"requests": int(done.group(1)), "duration_s": duration_s, "non_2xx": int(failed.group(1)) if failed else 0,
            "latency_ms": latency}


def accepted(api: str) -> float:
    found = samples(httpx.get(f"{api}/metrics", timeout=10).text)
    return found.get(("lambdarec_ingested_events_total", (("outcome", "accepted"),)), 0.0)


def settled(api: str):
    """A probe for ``wait_for`` polling once a second: the accepted count once it held still between two
    polls (wrk stops with requests in flight)."""
    last = [accepted(api)]

    def probe() -> float | None:
        now = accepted(api)
        still, last[0] = now == last[0], now
        return now if still else None
    return probe


def on_topic(settings: Settings) -> int:
    consumer = make_consumer(settings.bootstrap_servers)
    try:
        partitions = [TopicPartition(settings.topic_events, p)
                      for p in sorted(consumer.partitions_for_topic(settings.topic_events) or ())]
        return sum(partition_end_offsets(consumer, partitions).values())
    finally:
        consumer.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0,
                        help="Serving processes (lambdarec serve --workers); 0, the default, is one per core.")
    parser.add_argument("--records", type=Path, default=records.RECORDS, help="Where the dated record goes.")
    args = parser.parse_args(argv)
    record = records.start("ingest", vars(args))
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: run `make bench-tools`")
    workers = worker_count(args.workers)
    root = Path(tempfile.mkdtemp(prefix="lambdarec-bench-ingest-"))
    settings = Settings(root=root, embedded_broker_port=free_port(), embedded_controller_port=free_port(),
                        serve_port=free_port(), allow_development_key=True,
                        ingest_rate_limit_per_s=0)  # the platform's capacity, not one caller's rate limit
    settings = api_keys.provision(settings, "bench: ingest", ["ingest"])  # wrk sends it, as a backend would
    env = spark_submit_env(settings)
    api = f"http://127.0.0.1:{settings.serve_port}"
    single, batches = root / "single.jsonl", root / "batches.jsonl"
    write_bodies(single, 1, seed=1, days=live_days(settings))  # occurred_at the API takes (its retention)
    write_bodies(batches, args.batch, seed=2, days=live_days(settings))
    with EmbeddedBroker(settings):
        serving = start_child("serving", lambdarec_command("serve", "--workers", str(workers), "--log-level", "warning"), root / "logs",
                              env)
        try:
            wait_for(lambda: serving.check_alive() and httpx.get(f"{api}/health", timeout=1).status_code == 200,
                     120, "serving")
            url = f"{api}/v1/events/batch"
            wrk(url, single, 1, 2, env)  # warm-up: the producer's connection, the code paths
            one = wrk(url, single, 1, args.seconds, env)
            runs = []
            for _ in range(args.runs):
                before = accepted(api)
                run = wrk(url, batches, args.connections, args.seconds, env)
                run["accepted_events_per_s"] = round((accepted(api) - before) / run["duration_s"])
                runs.append(run)
            total = wait_for(settled(api), 60, "the requests wrk left in flight to finish", interval_s=1.0)
            wait_for(lambda: on_topic(settings) >= total, 30, "every accepted event on the topic")
            records.write({**record, "figures": {
                "single_event_ms": one["latency_ms"], "single_event_requests_per_s": round(one["requests"] / one["duration_s"]),
                "accepted_events_per_s": {"median": statistics.median(r["accepted_events_per_s"] for r in runs),
                                          "runs": [r["accepted_events_per_s"] for r in runs]},
                "batch_latency_ms": [r["latency_ms"] for r in runs], "non_2xx": sum(r["non_2xx"] for r in runs),
                "accepted": int(accepted(api)), "on_topic": on_topic(settings),  # read again: a late request counts
                "connections": args.connections, "batch": args.batch, "seconds": args.seconds, "workers": workers,
            }}, args.records)
        finally:
            serving.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
