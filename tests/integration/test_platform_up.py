"""``lambdarec up`` / ``ps`` / ``down`` for real: the supervisor restarts what is killed, and nothing is lost.

Each test brings the platform up on a temp root and free ports with the CLI, as
a user would, kills components with SIGKILL and reads ``lambdarec ps --json``
until the supervisor has restarted them (a new pid, a restart counted), then
checks the data path end to end: every event the API accepted, before and after
the kills, is in the Delta ``events`` table exactly once. The second test runs the
first run of every DAG under keys, and measures Airflow's memory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pyarrow.compute as pc
import pytest

from lambdarec import api_keys, audit, privacy, proc_tree, registry

from deploy.embedded import airflow as airflow_platform
from deploy.generator import bronze_table, generate_events
from lambdarec.lake import Lake
from deploy.up import UP_KEY_NAME
from lambdarec.processes import wait_for
from lambdarec.settings import Settings
from schemas.tables import EVENTS, ITEM_CATALOGUE
from tests.support.listeners import is_loopback
from tests.support.platform import platform_on

pytestmark = pytest.mark.integration

AIRFLOW_RSS_LIMIT = 1.5e9


@pytest.fixture
def platform(tmp_path):
    with platform_on(tmp_path) as platform:
        yield platform


def events(n: int, rng: random.Random) -> list[dict]:
    return [{
        "event_id": str(uuid.uuid4()),
        "user_id": f"user-{rng.randrange(40)}",
        "item_id": f"item-{rng.randrange(60)}",
        "event_type": rng.choice(["view", "click", "add_to_cart", "purchase"]),
        "occurred_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "context": {"device": "web", "country": rng.choice(["DE", "FR", "US"])},
    } for _ in range(n)]


def post(api: str, batches: int, rng: random.Random) -> list[str]:
    """POST ``batches`` batches of 20 events to /v1/events/batch; a batch the API could not take (the broker or
    serving just restarted) is sent again with the same event ids until accepted. The ids accepted."""
    accepted: list[str] = []
    with httpx.Client(base_url=api, timeout=30) as client:
        for _ in range(batches):
            batch = events(20, rng)

            def send(batch=batch) -> list[str] | None:
                response = client.post("/v1/events/batch", json=batch)
                return response.json()["accepted"] if response.status_code == 202 else None

            accepted += wait_for(send, 120, "serving to accept a batch", interval_s=0.5)
    return accepted


def lake_event_ids(settings: Settings) -> list[str]:
    lake = Lake(settings)
    return lake.read_arrow(EVENTS).column("event_id").to_pylist() if lake.exists(EVENTS) else []


def prometheus_value(base: str, query: str) -> float | None:
    """The one value of an instant PromQL query (None while it has no result)."""
    result = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_up_restarts_what_is_killed_and_every_accepted_event_lands_once(platform):
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    started = time.monotonic()
    up = platform.up("--without", "airflow")
    up_s = time.monotonic() - started
    assert platform.api in up.stdout and f"Kafka bootstrap: {platform.settings.bootstrap_servers}" in up.stdout
    info = platform.ps()
    assert info["up"] and info["status"] == "running"
    assert [c["name"] for c in info["components"]] == ["broker", "postgres", "cdc", "speed", "serving", "prometheus"]
    assert all(c["status"] == "running" and c["alive"] and c["restarts"] == 0 for c in info["components"]), info
    assert all(c["rss_bytes"] > 0 for c in info["components"])
    again = platform.run("up", "--without", "airflow")
    assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr

    accepted = post(platform.api, 5, rng)
    timings = {}
    for name in ("speed", "serving", "broker", "postgres", "cdc", "prometheus"):
        killed_at = time.monotonic()
        platform.kill_9(name)
        timings[name] = round(time.monotonic() - killed_at, 1)
        accepted += post(platform.api, 5, rng)
    # the catalogue still flows from Postgres through Connect into the lake after every part was killed once
    with psycopg.connect(platform.settings.operational_db, autocommit=True) as db:
        db.execute("INSERT INTO items (item_id, title, category) VALUES ('after-kills', 'Survivor', 'c1')")
    lake = Lake(platform.settings)
    wait_for(lambda: lake.exists(ITEM_CATALOGUE) and lake.read_arrow(
        ITEM_CATALOGUE, filter=pc.field("item_id") == "after-kills").num_rows == 1, 300,
        "a row inserted in Postgres after the kills to reach item_catalogue", interval_s=1.0)

    wait_for(lambda: len(lake_event_ids(platform.settings)) >= len(accepted), 300,
             f"{len(accepted)} accepted events in the lake", interval_s=1.0)
    ids = lake_event_ids(platform.settings)
    assert len(ids) == len(set(ids)) == len(set(accepted)) == len(accepted)
    assert set(ids) == set(accepted)
    table = Lake(platform.settings).read_arrow(EVENTS)
    assert pc.count_distinct(table.column("event_id")).as_py() == table.num_rows

    info = platform.ps()
    assert all(c["status"] == "running" and c["alive"] for c in info["components"]), info
    assert all(c["restarts"] >= 1 for c in info["components"] if c["name"] in timings), info
    # Prometheus scrapes serving and the speed job, whose counters saw the events land
    landed = 'sum(lambdarec_speed_rows_landed_total{table="events"})'
    assert wait_for(lambda: prometheus_value(platform.prometheus, landed), 120,
                    "Prometheus to scrape the speed job's landed events", interval_s=1.0) > 0
    assert wait_for(lambda: prometheus_value(platform.prometheus, 'sum(lambdarec_ingested_events_total)'), 60,
                    "Prometheus to scrape serving", interval_s=1.0) > 0  # since serving's restart
    pids = platform.pids()
    assert len(pids) >= 5
    # Every listener of every process (JVMs, Spark's driver and Python workers, Postgres, Prometheus) is on
    # loopback: `ss -ltn` after `up` shows nothing else of ours.
    held = platform.listeners()
    assert platform.ports <= {port for _, _, port in held}, held  # each configured one is seen, so the check bites
    assert not [listener for listener in held if not is_loopback(listener[1])], held
    down = platform.run("down", timeout_s=400)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [pid for pid in pids if proc_tree.alive(pid)]
    assert platform.ps()["up"] is False
    restarts = {c["name"]: c["restarts"] for c in info["components"]}
    print(f"platform: up in {up_s:.0f} s; back after kill -9 (s): {timings}; restarts {restarts}; "
          f"events accepted={len(accepted)} in lake={len(ids)}; {len(pids)} processes gone after down; "
          f"listeners {sorted({(address, port) for _, address, port in held})}")


def files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


DAGS = ["lambdarec_batch", "lambdarec_maintenance", "lambdarec_privacy"]


@pytest.mark.spark
def test_a_fresh_up_with_keys_runs_every_dag_green_on_a_small_airflow(platform):
    """As a new user: keys mode (the default), events in the lake and an erasure pending, `up`, then each DAG
    unpaused in Airflow (the batch DAG first, as a new user would, then the other two). The first run of each
    succeeds end to end: the batch DAG trains, publishes and reloads serving with the admin key `up` made for
    Airflow, whose token no file under the root holds; the privacy DAG completes the erasure; the maintenance
    DAG prunes, compacts, vacuums and expires. Airflow stays small, on loopback, and comes back when its
    scheduler is killed."""
    platform.env.update({"LAMBDAREC_AUTH": "keys", "LAMBDAREC_MODEL_FAMILIES": '["als"]', "LAMBDAREC_TUNE_TRIALS": "0",
                         "LAMBDAREC_ALS_RANK": "16", "LAMBDAREC_ALS_ITERATIONS": "5",
                         "LAMBDAREC_SPARK_SHUFFLE_PARTITIONS": "2"})
    lake = Lake(platform.settings)
    lake.append_arrow(EVENTS, bronze_table(generate_events(3000, n_users=120, n_items=240, n_clusters=6, seed=5),
                                           platform.settings))
    erased = lake.read_arrow(EVENTS).column("user_id")[0].as_py()
    held = lake.read_arrow(EVENTS, filter=pc.field("user_id") == erased).num_rows
    privacy.record_erasure(lake, erased, "dag-erasure", "api", {})
    up = platform.up("--without", "cdc,speed,prometheus")
    assert "lambdarec keys create" in up.stdout
    [key] = [k for k in api_keys.keys(lake).values() if k.name == UP_KEY_NAME]
    assert key.live and key.scopes == {"admin"}
    password = json.loads((platform.root / "airflow" / "simple_auth_manager_passwords.json").read_text())["admin"]
    api = f"http://127.0.0.1:{platform.airflow_port}"
    assert api in up.stdout and f"password: {password}" in up.stdout
    token = httpx.post(f"{api}/auth/token", json={"username": "admin", "password": password}, timeout=10)
    airflow = httpx.Client(base_url=f"{api}/api/v2", timeout=30,
                           headers={"Authorization": f"Bearer {token.json()['access_token']}"})

    def parsed() -> list[str] | None:
        found = airflow.get("/dags").json()
        return sorted(d["dag_id"] for d in found["dags"]) if found["total_entries"] == len(DAGS) else None

    assert wait_for(parsed, 180, "the dag-processor to parse dags/", interval_s=1.0) == DAGS
    check_airflow_is_small(platform)

    def finished(dag_id: str) -> dict | None:
        runs = airflow.get(f"/dags/{dag_id}/dagRuns").json()["dag_runs"]
        return runs[0] if runs and runs[0]["state"] in ("success", "failed") else None

    states = {}
    for wave in (DAGS[:1], DAGS[1:]):
        for dag_id in wave:
            assert airflow.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        for dag_id in wave:
            run = wait_for(lambda dag_id=dag_id: finished(dag_id), 900, f"the first {dag_id} run", interval_s=2.0)
            tasks = airflow.get(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances").json()
            states[dag_id] = {t["task_id"]: (t["state"], t["try_number"]) for t in tasks["task_instances"]}
            assert run["state"] == "success", (dag_id, states[dag_id], platform.logs())
    assert states["lambdarec_batch"] == {task: ("success", 1) for task in
                                         ("snapshot", "train", "publish_or_reject", "reload_serving")}, states
    assert list(states["lambdarec_maintenance"])[0] == "prune_speed" and states["lambdarec_privacy"], states
    assert httpx.get(f"{platform.api}/ready", timeout=10).json()["model_version"] == 1
    published = registry.latest_published(lake)
    assert published is not None and published["model_version"] == 1
    assert published["params"]["rank"] == 16 and published["params"]["run_key"]  # settings reach the job
    assert published["metrics"]["model_recall_at_10"] > published["metrics"]["popularity_recall_at_10"]
    receipt = privacy.receipt(lake, "dag-erasure")
    assert receipt is not None and receipt["removed"]["events"] == held and privacy.pending(lake) == []
    reloads = [r for r in audit.read(lake, action="model.reload") if r["key_id"] == key.key_id]
    assert [r["outcome"] for r in reloads] in (["reloaded"], ["unchanged"])  # or serving's own poll was first
    assert files_holding(platform.root, f"lrk_{key.key_id}_".encode()) == []  # no log, state or file has the token

    platform.kill_9("airflow-scheduler")
    after = platform.ps()["rss_bytes"]["airflow"]
    assert after < AIRFLOW_RSS_LIMIT
    print(f"first runs: {json.dumps(states)}; airflow {after / 2**20:.0f} MiB RSS after a scheduler restart")


def check_airflow_is_small(platform) -> None:
    """Airflow's five components, one process each plus the executor's workers, on loopback, under the limit."""
    info = platform.ps()
    airflow = [c for c in info["components"] if c["name"].startswith("airflow-")]
    assert [c["name"] for c in airflow] == ["airflow-db-migrate", "airflow-api-server", "airflow-dag-processor",
                                            "airflow-scheduler", "airflow-triggerer"]
    assert airflow[0]["status"] == "done"
    assert all(c["status"] == "running" and c["rss_bytes"] > 0 for c in airflow[1:]), airflow
    processes = sum(c["processes"] for c in airflow)
    rss = info["rss_bytes"]["airflow"]
    assert rss == sum(c["rss_bytes"] for c in airflow) < AIRFLOW_RSS_LIMIT, airflow
    # One process each, the executor's workers, and a DAG file being parsed (not 42 processes).
    assert processes <= 4 + int(airflow_platform.sizing()["AIRFLOW__CORE__PARALLELISM"]) + 1, airflow
    # what Airflow's home page shows: every part of the deployment healthy, the triggerer too
    health = httpx.get(airflow_platform.health_url(platform.airflow_port), timeout=10).json()
    assert {part: health[part]["status"] for part in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == {
        part: "healthy" for part in ("metadatabase", "scheduler", "dag_processor", "triggerer")}, health
    held = platform.listeners()
    assert platform.airflow_port in {port for _, _, port in held}, held
    assert not [listener for listener in held if not is_loopback(listener[1])], held
    print(f"airflow: {processes} processes, {rss / 2**20:.0f} MiB RSS; "
          f"{json.dumps({c['name']: round(c['rss_bytes'] / 2**20) for c in airflow})}")
