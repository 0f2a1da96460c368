"""The Airflow DAG: it imports cleanly and ``dag.test()`` really trains through spark-submit.

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

import pytest

from batch import registry
from lambdarec.generator import bronze_table, generate_events
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import EVENTS

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "dags"
BIN = Path(sys.executable).parent

INSPECT_DAG = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(DAGS)!r})
dag = bag.get_dag("lambdarec_batch")
task = dag.get_task("train_als")
print(json.dumps({{
    "import_errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
    "dag_ids": sorted(bag.dag_ids),
    "schedule": str(dag.schedule),
    "catchup": dag.catchup,
    "max_active_runs": dag.max_active_runs,
    "tags": sorted(dag.tags),
    "retries": task.retries,
    "heavy_imports": sorted(m for m in ("pyspark", "lambdarec.submit", "lambdarec.lake") if m in sys.modules),
}}))
"""

TEST_DAG = f"""
import json
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder={str(DAGS)!r}).get_dag("lambdarec_batch")
run = dag.test()
tasks = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
print("RESULT " + json.dumps({{"state": str(run.state), "tasks": tasks}}))
"""


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


def test_dag_imports_cleanly_and_lightly(airflow_env):
    done = python(INSPECT_DAG, airflow_env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["import_errors"] == {}
    assert info["dag_ids"] == ["lambdarec_batch"]
    assert info["schedule"] == "@hourly"
    assert info["catchup"] is False and info["max_active_runs"] == 1
    assert info["retries"] == 2 and "lambdarec" in info["tags"]
    assert info["heavy_imports"] == []


def test_dag_run_trains_and_publishes_through_spark_submit(airflow_env, tmp_path):
    settings = Settings(root=tmp_path / "lambdarec")
    lake = Lake(settings)
    end = datetime(2025, 3, 1, tzinfo=UTC)
    events = generate_events(3000, n_users=120, n_items=240, n_clusters=6, seed=5, end=end)
    lake.append_arrow(EVENTS, bronze_table(events, settings))
    env = {
        **airflow_env,
        "LAMBDAREC_ROOT": str(settings.root),
        "LAMBDAREC_ALS_RANK": "16",
        "LAMBDAREC_ALS_ITERATIONS": "5",
        "LAMBDAREC_SPARK_SHUFFLE_PARTITIONS": "2",
    }

    done = python(TEST_DAG, env, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result == {"state": "success", "tasks": {"train_als": "success"}}, output[-5000:]

    published = registry.latest_published(lake)
    assert published is not None, output[-5000:]
    assert (published["model_version"], published["source_events_version"]) == (1, 1)
    assert published["params"]["rank"] == 16
    assert published["metrics"]["model_recall_at_10"] > published["metrics"]["popularity_recall_at_10"]
