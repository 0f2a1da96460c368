"""Speed-layer benchmark: steady event rates through the real broker, speed job and serving.

Starts the embedded broker (Apache Kafka), ``spark-submit speed/job.py`` and
``lambdarec serve`` as real processes in a temporary root, then for each offered rate:

- produces events to ``events`` at that rate for ``--seconds`` (the API's path
  minus HTTP, so the offered load is not capped by one uvicorn worker);
- follows ``speed-updates`` as serving does and times each event from produce to
  its first ``interaction`` message (``speed_view_latency_ms``: the real-time
  query) and to its versioned one (``delta_latency_ms``: landed in Delta by the
  events query);
- meanwhile probe users POST an event to serving and time until that user's
  recommendations change (``e2e_freshness_ms``), one after another, at least
  ``--min-probes`` per rate;
- samples the CPU time of every process (broker, speed job JVM and its Python
  workers, serving, this load generator) over the rate's window.

Prints one JSON object: per-rate figures, the driver's peak memory, and the
highest rate whose e2e p95 stayed under 1 s.

    .venv/bin/python bench/speed.py --rates 1000,3000,5000,8000 --seconds 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
from kafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/speed.py` from anywhere

from bench import records  # noqa: E402
from lambdarec import api_keys
from deploy.embedded.broker import EmbeddedBroker
from lambdarec.kafka_io import make_consumer, make_producer, partition_end_offsets
from lambdarec.lake import Lake
from lambdarec.processes import start_child, wait_for
from deploy.cli import lambdarec_command
from lambdarec.pseudonym import pseudonymise
from lambdarec.settings import Settings
from lambdarec.submit import spark_submit_env, speed_job_command
from schemas.tables import SPEED_PROGRESS
from schemas.topics import SPEED_UPDATE_KIND_INTERACTION

TYPES = ("view", "click", "add_to_cart", "purchase")


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "n": 0}
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(int(q / 100 * len(ordered)), len(ordered) - 1)], 1)  # noqa: E731
    return {"p50": pick(50), "p95": pick(95), "p99": pick(99), "n": len(ordered)}


class UpdatesFollower(threading.Thread):
    """Follows speed-updates from its current end; records when each event_id first shows up,
    unversioned (real-time query) and versioned (landed in Delta by the events query)."""

    def __init__(self, settings: Settings):
        super().__init__(daemon=True)
        self.settings, self.seen, self.landed, self.stop = settings, {}, {}, threading.Event()
        self.consumer = make_consumer(settings.bootstrap_servers, fetch_max_wait_ms=5)
        topic = settings.topic_speed_updates
        tps = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic)]
        ends = partition_end_offsets(self.consumer, tps)
        for tp in tps:
            self.consumer.seek(tp, ends[tp])

    def run(self) -> None:
        while not self.stop.is_set():
            for batch in self.consumer.poll(timeout_ms=20).values():
                now = time.monotonic()
                for record in batch:
                    update = json.loads(record.value)
                    if update.get("kind") == SPEED_UPDATE_KIND_INTERACTION:
                        self.seen.setdefault(update["event_id"], now)
                        if "events_version" in update:
                            self.landed.setdefault(update["event_id"], now)


def event(user: str, item: str) -> dict:
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    return {"event_id": str(uuid.uuid4()), "user_id": user, "item_id": item, "event_type": "view",
            "occurred_at": now, "context": {"device": "bench", "country": "DE"}}


def offer(settings: Settings, rate: int, seconds: float, sent: dict[str, float]) -> int:
    """Produce ``rate`` events/s for ``seconds`` in 10 ms ticks; returns how many were sent."""
    producer = make_producer(settings, linger_ms=5)
    users = [pseudonymise(f"bench-{n}", settings.pseudonym_key) for n in range(5000)]  # as the API sends them
    start, count, tick = time.monotonic(), 0, 0.01
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(rate * (elapsed + tick))
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        for _ in range(due - count):
            body = {**event(users[count % 5000], f"item-{count % 997}"), "schema_version": 1, "received_at": now}
            producer.send(settings.topic_events, json.dumps(body).encode(), key=body["user_id"].encode())
            sent[body["event_id"]] = time.monotonic()
            count += 1
        time.sleep(max(start + elapsed + tick - time.monotonic(), 0))  # pacing the load, not synchronisation
    producer.flush(30)
    producer.close(5)
    return count


def probe(api: str, headers: dict[str, str], stop: threading.Event, out: list[float]) -> None:
    """POST one event for a fresh probe user, then poll until its recommendations count it; repeat (with
    ``headers``: an API key's, as a backend sends it)."""
    with httpx.Client(base_url=api, timeout=10, headers=headers) as client:
        while not stop.is_set():
            user = f"probe-{uuid.uuid4().hex[:8]}"
            before = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
            started = time.monotonic()
            client.post("/v1/events", json=event(user, "item-1")).raise_for_status()
            while time.monotonic() - started < 30:
                after = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
                if after.get("fresh_interactions", 0) > before.get("fresh_interactions", 0):
                    out.append((time.monotonic() - started) * 1000)
                    break
                stop.wait(0.005)  # poll interval, so probing does not starve the job of CPU
            stop.wait(0.05)


class CpuSampler:
    """CPU seconds per process group between ``start`` and ``stop``, as cores used."""

    def __init__(self, groups: dict[str, int]):
        self.groups = groups  # name -> root pid (its children count with it, unless a group of their own)

    def _times(self) -> dict[str, float]:
        out = {}
        roots = set(self.groups.values())
        for name, pid in self.groups.items():
            total = 0.0
            try:
                root = psutil.Process(pid)
                children = [c for c in root.children(recursive=True)
                            if c.pid not in roots and not any(p.pid in roots - {pid} for p in c.parents())]
                for proc in [root, *children]:
                    try:
                        times = proc.cpu_times()
                        total += times.user + times.system
                    except psutil.NoSuchProcess:
                        continue
            except psutil.NoSuchProcess:
                pass
            out[name] = total
        return out

    def start(self) -> None:
        self._started, self._first = time.monotonic(), self._times()

    def stop(self) -> dict[str, float]:
        elapsed, last = time.monotonic() - self._started, self._times()
        return {name: round((last[name] - self._first[name]) / elapsed, 2) for name in last}


def driver_peak_mb(job) -> float:
    """Peak resident memory of the driver: the spark-submit JVM and its Python driver process."""
    total = 0
    for proc in [psutil.Process(job.process.pid), *psutil.Process(job.process.pid).children(recursive=True)]:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except FileNotFoundError:
            continue
        name = proc.name()
        if "java" in name or ("python" in name and "pyspark.daemon" not in " ".join(proc.cmdline())):
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return round(total / 1024, 1)


def measure(settings: Settings, api: str, rate: int, seconds: float, min_probes: int, cpu: CpuSampler) -> dict:
    follower = UpdatesFollower(settings)
    follower.start()
    sent: dict[str, float] = {}
    freshness: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(api, api_keys.bearer(settings), stop, freshness), daemon=True)
    wall_started = dt.datetime.now(dt.timezone.utc)
    cpu.start()
    prober.start()
    started = time.monotonic()
    count = offer(settings, rate, seconds, sent)
    offered_s = time.monotonic() - started
    wait_for(lambda: len(follower.seen.keys() & sent.keys()) >= count, 120, "every event on speed-updates",
             interval_s=0.1)
    cores = cpu.stop()
    wait_for(lambda: len(freshness) >= min_probes, 120, f"{min_probes} freshness probes", interval_s=0.1)
    stop.set()
    prober.join(30)
    wait_for(lambda: len(follower.landed.keys() & sent.keys()) >= count, 300, "every event landed in Delta",
             interval_s=0.2)
    follower.stop.set()
    follower.join(5)
    seen = [follower.seen[e] for e in sent]
    return {
        "offered_rate": round(count / offered_s, 1),
        # events out of the pipeline per second, first to last: the offered rate when it keeps up
        "sustained_rate": round(count / (max(seen) - min(seen)), 1),
        "speed_view_latency_ms": percentiles([(follower.seen[e] - t) * 1000 for e, t in sent.items()]),
        "delta_latency_ms": percentiles([(follower.landed[e] - t) * 1000 for e, t in sent.items()]),
        "e2e_freshness_ms": percentiles(freshness),
        "max_source_lag": max_lag_since(settings, wall_started),
        "cpu_cores": cores,
    }


def max_lag_since(settings: Settings, since: dt.datetime) -> int | None:
    """The largest source lag the events query recorded since ``since``."""
    progress = Lake(settings).read_arrow(SPEED_PROGRESS).to_pylist()
    lags = [row["source_lag"] for row in progress if row["source_lag"] is not None and row["recorded_at"] >= since]
    return max(lags, default=None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,3000,5000,8000", help="Offered rates (events/s), comma-separated.")
    parser.add_argument("--seconds", type=float, default=20.0, help="How long each rate is offered.")
    parser.add_argument("--min-probes", type=int, default=20, help="Fewest freshness probes per rate.")
    parser.add_argument("--records", type=Path, default=records.RECORDS, help="Where the dated record goes.")
    args = parser.parse_args(argv)
    record = records.start("speed", vars(args))
    root = Path(tempfile.mkdtemp(prefix="lambdarec-bench-speed-"))
    settings = Settings(root=root, embedded_broker_port=free_port(), embedded_controller_port=free_port(),
                        serve_port=free_port(), speed_metrics_port=free_port(), allow_development_key=True)
    settings = api_keys.provision(settings, "bench: speed probes", ["ingest", "read"])
    api = f"http://127.0.0.1:{settings.serve_port}"
    env = spark_submit_env(settings)
    with EmbeddedBroker(settings) as broker:
        job = start_child("speed", speed_job_command(settings), root / "logs", env)
        serving = start_child("serving", lambdarec_command("serve"), root / "logs", env)
        cpu = CpuSampler({"broker": broker.pid, "speed_job": job.process.pid, "serving": serving.process.pid,
                          "load_generator": psutil.Process().pid})
        try:
            wait_for(lambda: job.check_alive() and '"event": "started"' in job.log_path.read_text(), 300,
                     "the speed job")
            wait_for(lambda: serving.check_alive() and httpx.get(f"{api}/health", timeout=1).status_code == 200,
                     120, "serving")
            measure(settings, api, 200, 5, 3, cpu)  # warm-up: JIT, Python workers, first commits
            runs = {}
            for rate in (int(r) for r in args.rates.split(",")):
                runs[str(rate)] = measure(settings, api, rate, args.seconds, args.min_probes, cpu)
            under = [int(r) for r, f in runs.items()
                     if (f["e2e_freshness_ms"]["p95"] or 1e9) <= 1000 and f["sustained_rate"] >= 0.98 * int(r)]
            records.write({**record, "figures": {
                "runs": runs,
                "driver_peak_memory_mb": driver_peak_mb(job),
                "max_rate_with_e2e_p95_under_1s": max(under, default=None),
                "seconds_per_rate": args.seconds,
                "cores": psutil.cpu_count(),
                "load_average_1m": round(psutil.getloadavg()[0], 2),
            }}, args.records)
        finally:
            serving.stop()
            job.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
