"""The Airflow DAGs: they import cleanly and lightly, and every task follows the retry and tagging policy.
Their first runs, under the Airflow `lambdarec up` starts, are in ``test_platform_up``.

Airflow runs in subprocesses with their own AIRFLOW_HOME (SQLite metadata DB), because
Airflow reads its configuration once, at import, and must not touch ~/airflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
