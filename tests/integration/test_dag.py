"""The Airflow DAGs: they import cleanly, and ``dag.test()`` really trains and erases through spark-submit.

Airflow runs in subprocesses with their own AIRFLOW_HOME (SQLite metadata DB), because
Airflow reads its configuration once, at import, and must not touch ~/airflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest


from lambdarec import api_keys, audit, privacy, registry
from lambdarec.generator import bronze_table, generate_events
from lambdarec.lake import Lake
from schemas.tables import EVENTS, MODELS
from tests.support.lake import seed_lake
from tests.support.serving import serving

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "dags"
BIN = Path(sys.executable).parent

INSPECT_DAGS = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(DAGS)!r})
dags = {{}}
for dag_id in bag.dag_ids:
    dag = bag.get_dag(dag_id)
    dags[dag_id] = {{
        "schedule": str(dag.schedule),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "tags": sorted(dag.tags),
        "tasks": [t.task_id for t in dag.topological_sort()],
        "retries": {{t.task_id: t.retries for t in dag.tasks}},
        "owners": sorted({{t.owner for t in dag.tasks}}),
        "timeouts": {{t.task_id: t.execution_timeout is not None for t in dag.tasks}},
    }}
print(json.dumps({{
    "import_errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
    "dags": dags,
    "heavy_imports": sorted(m for m in ("pyspark", "lambdarec.submit", "lambdarec.lake", "batch.train") if m in sys.modules),
}}))
"""

def dag_test_script(dag_id: str) -> str:
    """A script that runs ``dag.test()`` of ``dag_id`` and prints its state and its tasks' states."""
    return f"""
import json
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder={str(DAGS)!r}).get_dag({dag_id!r})
run = dag.test()
tasks = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
print("RESULT " + json.dumps({{"state": str(run.state), "tasks": tasks}}))
"""


def dag_result(done: subprocess.CompletedProcess) -> dict:
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])

@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow")
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    migrate = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    return env


def python(script: str, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout, cwd=PROJECT
    )


def test_dags_import_cleanly_and_lightly(airflow_env):
    done = python(INSPECT_DAGS, airflow_env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["import_errors"] == {}
    assert sorted(info["dags"]) == ["lambdarec_batch", "lambdarec_maintenance", "lambdarec_privacy"]
    assert info["heavy_imports"] == []
    batch = info["dags"]["lambdarec_batch"]
    assert batch["schedule"] == "@hourly" and batch["catchup"] is False and batch["max_active_runs"] == 1
    assert batch["tasks"] == ["snapshot", "train", "publish_or_reject", "reload_serving"]
    assert info["dags"]["lambdarec_maintenance"]["tasks"] == ["prune_speed", "compact", "vacuum", "expire_models"]
    assert info["dags"]["lambdarec_privacy"]["tasks"] == ["erase"]


def test_every_task_follows_the_retry_and_tagging_policy(airflow_env):
    done = python(INSPECT_DAGS, airflow_env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for dag_id, dag in json.loads(done.stdout.strip().splitlines()[-1])["dags"].items():
        assert "lambdarec" in dag["tags"] and len(dag["tags"]) >= 2, dag_id
        assert dag["owners"] == ["lambdarec"], dag_id
        assert all(retries >= 2 for retries in dag["retries"].values()), (dag_id, dag["retries"])
        assert all(dag["timeouts"].values()), (dag_id, dag["timeouts"])


def test_dag_run_trains_publishes_and_reloads_serving(airflow_env, broker_settings):
    settings = broker_settings.model_copy(update={"auth": "keys", "serve_model_poll_s": 3600})
    lake = Lake(settings)
    admin_key, token = api_keys.create(lake, "airflow", ["admin"])  # what `lambdarec up` hands its Airflow
    end = datetime(2025, 3, 1, tzinfo=UTC)
    events = generate_events(3000, n_users=120, n_items=240, n_clusters=6, seed=5, end=end)
    lake.append_arrow(EVENTS, bronze_table(events, settings))
    with serving(settings) as client:
        assert client.get("/ready").json()["model_version"] is None
        env = {
            **airflow_env,
            "LAMBDAREC_ROOT": str(settings.root),
            # one family, untuned: the rank below must reach the job through the task's environment
            "LAMBDAREC_MODEL_FAMILIES": '["als"]',
            "LAMBDAREC_TUNE_TRIALS": "0",
            "LAMBDAREC_ALS_RANK": "16",
            "LAMBDAREC_ALS_ITERATIONS": "5",
            "LAMBDAREC_SPARK_SHUFFLE_PARTITIONS": "2",
            "LAMBDAREC_SERVING_URL": str(client.base_url),
            "LAMBDAREC_API_KEY": token,
        }
        done = python(dag_test_script("lambdarec_batch"), env, timeout=600)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-5000:]
        result = dag_result(done)
        tasks = {"snapshot": "success", "train": "success", "publish_or_reject": "success", "reload_serving": "success"}
        assert result == {"state": "success", "tasks": tasks}, output[-5000:]
        assert client.get("/ready").json()["model_version"] == 1  # told to reload, not polling
    reloads = [(r["outcome"], r["key_id"]) for r in audit.read(lake, action="model.reload")]
    assert reloads == [("reloaded", admin_key.key_id)]

    published = registry.latest_published(lake)
    assert published is not None, output[-5000:]
    assert (published["model_version"], published["source_events_version"]) == (1, 1)
    assert published["params"]["rank"] == 16 and published["params"]["run_key"]
    assert published["metrics"]["model_recall_at_10"] > published["metrics"]["popularity_recall_at_10"]
    statuses = sorted(r["status"] for r in lake.read_arrow(MODELS).to_pylist())
    assert statuses == sorted([registry.TRAINING, registry.CANDIDATE, registry.PUBLISHED])


def test_privacy_dag_run_completes_the_pending_erasures(airflow_env, broker_settings):
    settings = broker_settings  # the receipt reads each topic's retention from the broker
    lake = seed_lake(settings, n_events=300)
    user = lake.read_arrow(EVENTS).column("user_id")[0].as_py()
    held = lake.read_arrow(EVENTS, filter=pc.field("user_id") == user).num_rows
    privacy.record_erasure(lake, user, "dag-erasure", "api", {})
    env = {**airflow_env, "LAMBDAREC_ROOT": str(settings.root), "LAMBDAREC_SPARK_SHUFFLE_PARTITIONS": "2",
           "LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers}
    done = python(dag_test_script("lambdarec_privacy"), env, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert dag_result(done) == {"state": "success", "tasks": {"erase": "success"}}
    receipt = privacy.receipt(lake, "dag-erasure")
    assert receipt is not None and receipt["removed"]["events"] == held and privacy.pending(lake) == []
