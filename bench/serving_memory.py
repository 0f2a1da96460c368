"""Serving memory and start-up under a flood of distinct users and items.

Drives --events events (2,000,000) over --users distinct users (1,000,000) and --items
distinct items (200,000) into a real ``lambdarec serve`` through the speed-updates topic of
the embedded broker, as the speed job sends them (``speed/sinks.py``): per micro-batch of
--batch events the rows go into the Delta speed tables first (``speed_user_interactions``,
``speed_user_features``, ``speed_item_trending``, ``speed_progress``; written here with
delta-rs, where the job uses delta-spark), then onto the topic: each event's real-time
``interaction`` message (before the tables) and its versioned copy, the batch's
``user_features`` rows and ``item_trending`` minute counts so far in messages of
``PUSH_ROWS`` rows, and its ``progress`` row. Every user and item has at least one event;
the rest are drawn at random (items with a heavy head). Event times span the last
--span-h hours, oldest first, so the speed view's horizon evicts as well as its caps.

A model is published first (--model-items items x --rank, --model-users users; written as
``bench/serve.py`` writes its models), so about half the items are new to it and are folded
in off the request path. While events flow, --rps recommendation requests ask for users the
stream has just touched and for early ones the cap has evicted; once serving has caught up,
--probe users evicted within the horizon are asked for (their interactions read back from
the lake).

It reports serving's RSS (process tree: peak while driven, and once caught up), the speed
view's entries, its evictions by entry and reason, the read-backs by outcome, the requests'
latency, then the start-up (process start to /ready: model loaded, speed tables
bootstrapped, topic followed) and RSS of a restarted serving before and after the
maintenance job's prune and compaction (Spark) of the speed tables. A restarted serving
replays --restart-replay-s of the topic (0: none; the bench's whole topic is only minutes
old, where a deployment's replay covers ``speed_view_replay_s`` of steady traffic), so the
start-up figure is the model and the tables. It prints one JSON record and writes it, dated,
under --records (host, cores, commit, settings, figures); never a pass/fail.

    flock /tmp/lambdarec-heavy.lock .venv/bin/python bench/serving_memory.py [--events 2000000]
        [--users 1000000] [--items 200000] [--batch 10000] [--span-h 6]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pyarrow as pa
from confluent_kafka import Producer
from kafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import records  # noqa: E402
from bench.serve import write_model  # noqa: E402
from deploy.embedded.broker import EmbeddedBroker  # noqa: E402
from lambdarec.kafka_io import make_consumer, partition_end_offsets  # noqa: E402
from lambdarec.lake import Lake  # noqa: E402
from serving.metrics_text import samples  # noqa: E402
from lambdarec.processes import free_port, wait_for  # noqa: E402
from lambdarec.pseudonym import pseudonymise  # noqa: E402
from lambdarec.settings import Settings  # noqa: E402
from schemas.speed_updates import (  # noqa: E402
    KIND_ITEM_TRENDING,
    KIND_USER_FEATURES,
    SEGMENT_COUNTRY,
    SEGMENT_DEVICE,
    GLOBAL_SEGMENT,
    encode_interaction,
    encode_progress,
    encode_rows,
)
from schemas.tables import (  # noqa: E402
    SPEED_ITEM_TRENDING,
    SPEED_PROGRESS,
    SPEED_USER_FEATURES,
    SPEED_USER_INTERACTIONS,
    TableSpec,
)
from speed.sinks import PUSH_ROWS  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
COUNTRIES = ("DE", "FR", "GB", "US", "ES")
DEVICES = ("ios", "android", "web")
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
EVENT_SHARES = (0.7, 0.2, 0.07, 0.03)
MINUTE_US = 60_000_000
SPEED_TABLES = (SPEED_USER_INTERACTIONS, SPEED_USER_FEATURES, SPEED_ITEM_TRENDING, SPEED_PROGRESS)
QUERY_EVENTS, QUERY_FEATURES = "bench-events", "bench-features"


class Serving:
    """One ``lambdarec serve`` process, its readiness, memory and metrics."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path):
        self.env, self.port, self.log_path = env, port, log_path
        self.base = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 1800) -> float:
        """Start it; the seconds until /ready says it is ready."""
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "deploy.cli", "serve", "--port", str(self.port), "--log-level", "warning"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT)
        wait_for(self.ready, timeout_s, "serving to be ready", interval_s=0.1)
        return round(time.monotonic() - started, 2)

    def ready(self) -> dict | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"serving exited {self.process.returncode}: see {self.log_path}")
        body = httpx.get(f"{self.base}/ready", timeout=5).json()
        return body if body["ready"] else None

    def rss_mb(self) -> float:
        """Resident memory of serving's process tree."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        return round(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20, 1)

    def metrics(self) -> dict:
        return samples(httpx.get(f"{self.base}/metrics", timeout=10).text)

    def view(self) -> dict[str, Any]:
        """The speed view's entries, evictions and read-backs, as /metrics shows them."""
        found = self.metrics()
        out: dict[str, Any] = {"entries": {}, "evictions": {}, "recalls": {}}
        for (name, labels), value in found.items():
            labels = dict(labels)
            if name == "lambdarec_speed_view_entries":
                out["entries"][labels["entry"]] = int(value)
            elif name == "lambdarec_speed_view_evictions_total":
                out["evictions"][f"{labels['entry']}_{labels['reason']}"] = int(value)
            elif name == "lambdarec_speed_view_recalls_total":
                out["recalls"][labels["outcome"]] = int(value)
        return out

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class RssSampler(threading.Thread):
    """Serving's peak RSS, sampled every ``interval_s``."""

    def __init__(self, serving: Serving, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.serving, self.interval_s = serving, interval_s
        self.peak_mb = 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(psutil.Error):  # a child process that ended between listing and reading
                self.peak_mb = max(self.peak_mb, self.serving.rss_mb())
            self.stopped.wait(self.interval_s)


class Requests(threading.Thread):
    """Recommendation requests at ``rps`` while events flow, for ``pick()``'s users."""

    def __init__(self, serving: Serving, rps: float, pick):
        super().__init__(daemon=True)
        self.serving, self.rps, self.pick = serving, rps, pick
        self.latencies_ms: list[float] = []
        self.statuses: dict[str, int] = {}
        self.strategies: dict[str, int] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.serving.base, timeout=30) as client:
            while not self.stopped.is_set():
                started = time.perf_counter()
                response = client.get(f"/v1/users/{self.pick()}/recommendations", params={"k": 10})
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
                self.statuses[str(response.status_code)] = self.statuses.get(str(response.status_code), 0) + 1
                if response.status_code == 200:
                    strategy = response.json()["strategy"]
                    self.strategies[strategy] = self.strategies.get(strategy, 0) + 1
                self.stopped.wait(max(1 / self.rps - (time.perf_counter() - started), 0))  # pacing, not syncing


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    ordered = sorted(values)
    return {"p50": round(ordered[len(ordered) // 2], 1), "p99": round(ordered[min(int(0.99 * len(ordered)),
                                                                                  len(ordered) - 1)], 1),
            "n": len(ordered)}


class Stream:
    """The bench's events: who, what, when, in micro-batches, as the speed job would write and send them."""

    def __init__(self, settings: Settings, args: argparse.Namespace, end_us: int):
        rng = np.random.default_rng(args.seed)
        n, self.args = args.events, args
        covered_users, covered_items = min(args.users, n), min(args.items, n)
        self.user = np.concatenate([rng.permutation(args.users)[:covered_users],
                                    rng.integers(0, args.users, n - covered_users)])
        rng.shuffle(self.user)
        head = (args.items * rng.random(n - covered_items) ** 3).astype(np.int64)  # a heavy head of popular items
        self.item = np.concatenate([rng.permutation(args.items)[:covered_items], head])
        rng.shuffle(self.item)
        self.kind = rng.choice(len(EVENT_TYPES), n, p=EVENT_SHARES)
        self.country = rng.integers(0, len(COUNTRIES), args.users)
        self.device = rng.integers(0, len(DEVICES), args.users)
        span_us = int(args.span_h * 3600 * 1e6)
        self.at_us = end_us - span_us + (np.arange(n, dtype=np.int64) * span_us) // n
        self.names = [pseudonymise(f"user-{u}", settings.pseudonym_key) for u in range(args.users)]
        self.weights = [settings.event_weights[kind] for kind in EVENT_TYPES]
        self.minutes: dict[tuple[str, str, int, int], list[float]] = {}  # (segment, item, minute) -> counts so far

    def batches(self):
        for batch_id, start in enumerate(range(0, self.args.events, self.args.batch)):
            yield batch_id, range(start, min(start + self.args.batch, self.args.events))

    def interactions(self, events: range, events_version: int | None) -> list[dict[str, Any]]:
        return [{"event_id": f"bench-{i}", "user_id": self.names[self.user[i]], "item_id": f"item-{self.item[i]}",
                 "event_type": EVENT_TYPES[self.kind[i]], "weight": self.weights[self.kind[i]],
                 "occurred_at": int(self.at_us[i]), "country": COUNTRIES[self.country[self.user[i]]],
                 "device": DEVICES[self.device[self.user[i]]], "received_at": int(self.at_us[i]),
                 "events_version": events_version} for i in events]

    def features(self, events: range) -> list[dict[str, Any]]:
        """One ``speed_user_features`` row per user of the batch: their session so far in it."""
        users: dict[int, dict[str, Any]] = {}
        for i in events:
            u = int(self.user[i])
            row = users.setdefault(u, {"user_id": self.names[u], "session_id": f"s-{u}", "session_start": int(self.at_us[i]),
                                       "session_events": 0, "counts": {}, "country": COUNTRIES[self.country[u]],
                                       "device": DEVICES[self.device[u]]})
            row["last_seen"] = int(self.at_us[i])
            row["session_events"] += 1
            kind = EVENT_TYPES[self.kind[i]]
            row["counts"][kind] = row["counts"].get(kind, 0) + 1
        return [{**{k: v for k, v in row.items() if k != "counts"}, "counts_1h": list(row["counts"].items()),
                 "counts_24h": list(row["counts"].items())} for row in users.values()]

    def trending(self, events: range) -> list[dict[str, Any]]:
        """``speed_item_trending`` rows the batch changed: each (segment, item, minute)'s count so far."""
        first_minute = int(self.at_us[events[0]]) // MINUTE_US
        self.minutes = {key: value for key, value in self.minutes.items() if key[3] >= first_minute}  # closed
        touched = set()
        for i in events:
            u, minute = int(self.user[i]), int(self.at_us[i]) // MINUTE_US
            for segment in (GLOBAL_SEGMENT, (SEGMENT_COUNTRY, COUNTRIES[self.country[u]]),
                            (SEGMENT_DEVICE, DEVICES[self.device[u]])):
                key = (*segment, int(self.item[i]), minute)
                counts = self.minutes.setdefault(key, [0, 0.0])
                counts[0] += 1
                counts[1] += self.weights[self.kind[i]]
                touched.add(key)
        return [{"segment_type": key[0], "segment": key[1], "window_start": key[3] * MINUTE_US,
                 "window_end": (key[3] + 1) * MINUTE_US, "item_id": f"item-{key[2]}",
                 "events": self.minutes[key][0], "weight": self.minutes[key][1]} for key in touched]


def as_table(spec: TableSpec, rows: list[dict[str, Any]], **stamp: Any) -> pa.Table:
    """Rows (timestamps in µs) as a table of ``spec``, each with ``stamp``'s columns."""
    columns = {name: [row.get(name, stamp.get(name)) for row in rows] for name in spec.schema.names}
    return pa.table({name: pa.array(values, type=spec.schema.field(name).type) if not
                     pa.types.is_timestamp(spec.schema.field(name).type) else
                     pa.array(values, pa.int64()).cast(spec.schema.field(name).type)
                     for name, values in columns.items()}, schema=spec.schema)


def drive(settings: Settings, stream: Stream, lake: Lake, on_batch: Callable[[range], object]) -> dict[str, Any]:
    """Every batch into the speed tables and onto the topic, as ``speed/sinks.py`` does (``on_batch(events)``
    hears each before it goes); the messages sent and the time taken."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 20,
                         "queue.buffering.max.messages": 1_000_000})  # uncompressed: serving reads with kafka-python
    appenders = {spec.name: lake.appender(spec) for spec in SPEED_TABLES}
    topic, sent, started = settings.topic_speed_updates, 0, time.monotonic()

    def send(key: bytes, value: bytes) -> None:
        nonlocal sent
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.1)
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)

    for batch_id, events in stream.batches():
        on_batch(events)
        version = batch_id + 11  # newer than the model's snapshot (bench/serve.py: version x 10)
        for row in stream.interactions(events, None):  # the real-time query: before any table has it
            send(row["user_id"].encode(), encode_interaction(row))
        landed = stream.interactions(events, version)
        appenders[SPEED_USER_INTERACTIONS.name].append(
            as_table(SPEED_USER_INTERACTIONS, landed, query_id=QUERY_EVENTS, batch_id=batch_id))
        for row in landed:  # the events query: after its commit, with the version that holds the event
            send(row["user_id"].encode(), encode_interaction(row, version))
        for spec, kind, rows in ((SPEED_USER_FEATURES, KIND_USER_FEATURES, stream.features(events)),
                                 (SPEED_ITEM_TRENDING, KIND_ITEM_TRENDING, stream.trending(events))):
            appenders[spec.name].append(as_table(spec, rows, query_id=QUERY_FEATURES, batch_id=batch_id))
            for n, start in enumerate(range(0, len(rows), PUSH_ROWS)):
                send(str(n).encode(), encode_rows(kind, QUERY_FEATURES, batch_id, rows[start:start + PUSH_ROWS]))
        progress = {"query_id": QUERY_FEATURES, "query_name": "features", "batch_id": batch_id,
                    "recorded_at": int(stream.at_us[events[-1]]), "rows_in": len(events), "source_lag": 0}
        appenders[SPEED_PROGRESS.name].append(as_table(SPEED_PROGRESS, [progress]))
        send(b"0", encode_progress(QUERY_FEATURES, batch_id, progress))
        producer.flush(120)
    return {"messages": sent, "produce_s": round(time.monotonic() - started, 1)}


class TopicEnds:
    """The end offsets of speed-updates, to tell when serving has applied every record."""

    def __init__(self, settings: Settings):
        self.consumer = make_consumer(settings.bootstrap_servers)
        topic = settings.topic_speed_updates
        self.partitions = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic)]

    def caught_up(self, serving: Serving) -> bool:
        ends = partition_end_offsets(self.consumer, self.partitions)
        body = serving.ready()
        offsets = body["speed_view"]["offsets"] if body else {}
        return all(offsets.get(str(tp.partition), 0) >= end for tp, end in ends.items())

    def close(self) -> None:
        self.consumer.close()


def restart(env: dict[str, str], root: Path, lake: Lake) -> dict[str, Any]:
    """A fresh serving over the lake as it is: start-up seconds, RSS once ready, what it loaded."""
    rows = {spec.name: lake.dataset(spec).count_rows() for spec in SPEED_TABLES if lake.exists(spec)}
    serving = Serving(env, free_port(), root / "logs" / "serving-restart.log")
    try:
        startup_s = serving.start()
        rss = serving.rss_mb()
        view = wait_for(lambda: (v := serving.view())["entries"].get("user") and v, 60, "the view gauges")
        return {"startup_s": startup_s, "rss_mb": rss, "table_rows": rows, "entries": view["entries"]}
    finally:
        serving.stop()


def prune(settings: Settings) -> dict[str, Any]:
    """The maintenance job's prune and compaction (Spark, in this process), and their time."""
    from batch import maintenance
    from lambdarec.spark import build_spark

    started = time.monotonic()
    spark = build_spark(settings, "bench-serving-memory-prune")
    try:
        done = maintenance.run(spark, settings, ("prune", "compact"))
    finally:
        spark.stop()
    return {"seconds": round(time.monotonic() - started, 1), **json.loads(json.dumps(done, default=str))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000, help="Events per micro-batch.")
    parser.add_argument("--span-h", type=float, default=6.0, help="Hours of event time the events span.")
    parser.add_argument("--model-items", type=int, default=100_000)
    parser.add_argument("--model-users", type=int, default=100_000)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--rps", type=float, default=5.0, help="Recommendation requests a second while driving.")
    parser.add_argument("--probe", type=int, default=200, help="Evicted users asked for once caught up.")
    parser.add_argument("--restart-replay-s", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--records", type=Path, default=records.RECORDS)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary root (lake, broker, logs).")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="A serving setting (LAMBDAREC_NAME=VALUE), e.g. --set speed_view_max_users=100000.")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="lambdarec-bench-memory-"))
    (root / "logs").mkdir()
    overrides = dict(entry.split("=", 1) for entry in args.set)
    settings = Settings(root=root, embedded_broker_port=free_port(), embedded_controller_port=free_port(),
                        allow_development_key=True, **overrides)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAMBDAREC_")},
           "LAMBDAREC_ROOT": str(root), "LAMBDAREC_EMBEDDED_BROKER_PORT": str(settings.embedded_broker_port),
           "LAMBDAREC_EMBEDDED_CONTROLLER_PORT": str(settings.embedded_controller_port),
           "LAMBDAREC_ALLOW_DEVELOPMENT_KEY": "true", "LAMBDAREC_AUTH": "open", "LAMBDAREC_SERVE_MODEL_POLL_S": "1",
           **{f"LAMBDAREC_{name.upper()}": value for name, value in overrides.items()}}
    lake = Lake(settings)
    record: dict[str, Any] = {
        **records.start("serving_memory", vars(args)),
        "settings": {name: getattr(settings, name) for name in (
            "speed_view_horizon_s", "speed_view_max_users", "speed_view_max_interactions", "speed_view_max_items",
            "speed_view_max_trending_rows", "speed_view_recall_users", "speed_recent_items",
            "speed_trending_window_s", "serve_foldin_items", "serve_foldin_interval_s")},
    }
    started = time.monotonic()
    write_model(lake, 1, args.model_items, args.model_users, args.rank, per_user=5, seed=1)
    record["write_model_s"] = round(time.monotonic() - started, 1)
    stream = Stream(settings, args, end_us=int(time.time() * 1e6))
    figures: dict[str, Any] = {}
    with EmbeddedBroker(settings):
        serving = Serving(env, free_port(), root / "logs" / "serving.log")
        try:
            figures["first_startup_s"] = serving.start()
            figures["rss_idle_mb"] = serving.rss_mb()
            sampler = RssSampler(serving)
            sampler.start()
            latest = {"event": 0}
            rng = np.random.default_rng(args.seed + 1)

            def pick() -> str:  # a user the stream just touched, or one from its first batches (evicted by now)
                i = latest["event"] if rng.random() < 0.5 else int(rng.integers(0, max(latest["event"] // 20, 1)))
                return f"user-{stream.user[i]}"

            requests = Requests(serving, args.rps, pick)
            requests.start()
            figures["drive"] = drive(settings, stream, lake, lambda events: latest.update(event=events[0]))
            started = time.monotonic()
            ends = TopicEnds(settings)
            wait_for(lambda: ends.caught_up(serving), 3600, "serving to catch up", interval_s=1.0)
            ends.close()
            figures["drive"]["catch_up_after_produce_s"] = round(time.monotonic() - started, 1)
            requests.stopped.set()
            requests.join(60)
            sampler.stopped.set()
            sampler.join(10)
            wait_for(lambda: serving.view()["entries"].get("user"), 60, "the view gauges")
            figures["rss_peak_mb"] = sampler.peak_mb
            figures["rss_after_mb"] = serving.rss_mb()
            figures["view_after_drive"] = serving.view()
            figures["requests_while_driving"] = {"latency_ms": percentiles(requests.latencies_ms),
                                                 "statuses": requests.statuses, "strategies": requests.strategies}
            figures["evicted_users_asked"] = probe_evicted(serving, stream, settings, args.probe)
            figures["rss_after_probe_mb"] = serving.rss_mb()
        finally:
            serving.stop()
        replay = {**env, "LAMBDAREC_SPEED_VIEW_REPLAY_S": str(args.restart_replay_s)}
        figures["restart_before_prune"] = restart(replay, root, lake)
        figures["prune"] = prune(settings)
        figures["restart_after_prune"] = restart(replay, root, lake)
    record["figures"] = figures
    if not args.keep:
        shutil.rmtree(root)
    records.write(record, args.records)
    return 0


def probe_evicted(serving: Serving, stream: Stream, settings: Settings, count: int) -> dict[str, Any]:
    """Ask, once, for users whose newest event is within the horizon but who left the view for the cap:
    the most recently evicted (``recent``: the record of evicted users still holds them) and the first
    evicted within the horizon (``early``: past ``speed_view_recall_users`` evictions ago, the record may
    have let them go). Latency, strategies, and the read-backs by outcome, per group."""
    last = np.full(stream.args.users, -1, dtype=np.int64)
    np.maximum.at(last, stream.user, np.arange(len(stream.user), dtype=np.int64))
    ordered = np.sort(last[last >= 0])[::-1]  # each user's newest event, newest first
    held = ordered[:settings.speed_view_max_users]  # about the users the view holds at the end
    horizon_start = np.searchsorted(stream.at_us, stream.at_us[-1] - settings.speed_view_horizon_s * 1_000_000)
    evicted = ordered[(ordered < held[-1]) & (ordered >= horizon_start)]
    groups = {"recent": evicted[:count], "early": evicted[::-1][:count]}
    out = {}
    with httpx.Client(base_url=serving.base, timeout=30) as client:
        for name, events in groups.items():
            before, latencies, strategies = serving.view()["recalls"], [], {}
            for i in events.tolist():
                started = time.perf_counter()
                body = client.get(f"/v1/users/user-{stream.user[i]}/recommendations", params={"k": 10}).json()
                latencies.append((time.perf_counter() - started) * 1000)
                strategies[body["strategy"]] = strategies.get(body["strategy"], 0) + 1
            after = serving.view()["recalls"]
            out[name] = {"users": len(events), "latency_ms": percentiles(latencies), "strategies": strategies,
                         "recalls": {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))}}
    return out


if __name__ == "__main__":
    sys.exit(main())
