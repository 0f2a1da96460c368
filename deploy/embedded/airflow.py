"""Airflow as four supervised processes on ``dags/``, sized for the machine.

``make airflow`` runs ``airflow standalone``, whose LocalExecutor forks its
``parallelism`` workers (32 by default) up front: 42 processes and 5.6 GB on
a 2-core machine. Under ``lambdarec up`` the scheduler, the dag-processor, the
triggerer and the API server run as separate children of the supervisor (so each is
restarted on its own), with the environment of ``make airflow`` (AIRFLOW_HOME
under the root, SQLite, the simple auth manager's password file, no examples)
and one task slot per two cores: every task of the DAGs is a ``spark-submit``
on ``local[2]``, and a second one at once would only share the same cores.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path

from lambdarec.settings import Settings
from lambdarec.submit import PROJECT_ROOT

ADMIN = "admin"
DEFAULT_PORT = 8080


class AirflowMissing(RuntimeError):
    """Airflow is not installed beside lambdarec."""


def airflow_home(settings: Settings) -> Path:
    """``<root>/airflow``, as ``make airflow`` has it: the SQLite database, airflow.cfg, task logs."""
    return Path(settings.root).resolve() / "airflow"


def passwords_file(settings: Settings) -> Path:
    return airflow_home(settings) / "simple_auth_manager_passwords.json"


def admin_password(settings: Settings) -> str:
    """The UI's ``admin`` password: generated once into the simple auth manager's file, then read from it."""
    path = passwords_file(settings)
    if not path.exists() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({ADMIN: secrets.token_urlsafe(12)}))
        partial.chmod(0o600)
        partial.replace(path)
    return json.loads(path.read_text())[ADMIN]


def executable() -> str:
    """The ``airflow`` beside this interpreter (the venv's), else PATH's."""
    beside = Path(sys.executable).parent / "airflow"
    found = str(beside) if beside.exists() else shutil.which("airflow")
    if not found:
        raise AirflowMissing("airflow is not installed: pip install 'lambdarec[airflow]' (make venv does), "
                             "or leave it out with `lambdarec up --without airflow`")
    return found


def sizing(cpus: int | None = None) -> dict[str, str]:
    """Airflow's process and task counts for a machine of ``cpus`` cores (default: this one's)."""
    slots = max(1, (cpus or os.cpu_count() or 1) // 2)
    return {
        "AIRFLOW__CORE__PARALLELISM": str(slots),  # LocalExecutor worker processes, forked at start
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(slots),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    }


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def health_url(port: int) -> str:
    return f"{api_url(port)}/api/v2/monitor/health"


def environment(settings: Settings, port: int, base: dict[str, str]) -> dict[str, str]:
    """``base`` (the platform's ``LAMBDAREC_*`` environment) plus what ``make airflow`` sets, sized for the machine."""
    home = airflow_home(settings)
    bin_dir = str(Path(sys.executable).parent)
    return {
        **base,
        "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', os.environ.get('PATH', ''))}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": base.get("AIRFLOW__API__HOST", "127.0.0.1"),  # loopback unless Airflow's own setting says
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url(port)}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
        **sizing(),
    }
