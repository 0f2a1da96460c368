"""Build ``spark-submit`` command lines for the platform's jobs.

The demo, the CLI and the Airflow DAG all launch jobs the way a data engineer
would, through ``spark-submit``; this module is the one place that knows how.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from pydantic import SecretStr

from lambdarec import jars
from lambdarec.settings import Settings
from lambdarec.spark import driver_address_conf, local_ip_env

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def spark_submit_executable() -> str:
    """The ``spark-submit`` next to the running interpreter (pyspark installs it), else PATH's."""
    beside = Path(sys.executable).parent / "spark-submit"
    if beside.exists():
        return str(beside)
    found = shutil.which("spark-submit")
    if not found:
        raise FileNotFoundError("spark-submit not found: install pyspark or put Spark's bin on PATH")
    return found


def job_script(relative: str) -> str:
    """Absolute path of a job file such as ``speed/job.py``."""
    return str(PROJECT_ROOT / relative)


def spark_submit_command(
    settings: Settings, script: str, args: list[str] | None = None, master: str | None = None
) -> list[str]:
    """A spark-submit command line for ``script`` (a path relative to the project root)."""
    return [
        spark_submit_executable(),
        "--master",
        master or settings.spark_master,
        "--driver-memory",
        settings.spark_driver_memory,
        "--conf",
        "spark.ui.enabled=false",
        *(arg for key, value in driver_address_conf(settings).items() for arg in ("--conf", f"{key}={value}")),
        "--conf",
        f"spark.sql.shuffle.partitions={settings.spark_shuffle_partitions}",
        "--jars",
        ",".join(jars.classpath(settings, "spark")),
        job_script(script),
        *(args or []),
    ]


def spark_submit_env(settings: Settings) -> dict[str, str]:
    """Environment for a spark-submit child: this interpreter for Python workers, same settings."""
    env = dict(os.environ)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.update(local_ip_env(settings))
    env["LAMBDAREC_ROOT"] = str(settings.root.resolve())
    for name, value in settings.model_dump(mode="json").items():
        if name == "root":
            continue
        if value is None:  # an unset optional field keeps its default; "None" would not parse
            env.pop(f"LAMBDAREC_{name.upper()}", None)
            continue
        secret = getattr(settings, name)
        if isinstance(secret, SecretStr):
            value = secret.get_secret_value()
        # pydantic-settings reads complex fields (event weights) as JSON.
        env[f"LAMBDAREC_{name.upper()}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return env


def run_spark_job(settings: Settings, script: str, args: list[str] | None = None) -> int:
    """spark-submit ``script`` as a child, as a scheduler would; its exit code."""
    import subprocess

    return subprocess.run(spark_submit_command(settings, script, args), env=spark_submit_env(settings),
                          check=False).returncode


def speed_job_command(settings: Settings, args: list[str] | None = None) -> list[str]:
    """``spark-submit speed/job.py`` on the speed job's own master (its real-time query holds slots)."""
    return spark_submit_command(settings, "speed/job.py", args, master=settings.speed_spark_master)


def spark_submit_bash(settings: Settings, script: str, args: list[str] | None = None) -> str:
    """A bash line that spark-submits ``script`` from the project root, as an Airflow bash task runs it.

    The job inherits the worker's ``LAMBDAREC_*`` variables; the line adds only an
    absolute lake root and this interpreter for the Python workers, so secrets stay
    out of the logged command.
    """
    import shlex

    env = {
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        **local_ip_env(settings),
        "LAMBDAREC_ROOT": str(settings.root.resolve()),
    }
    return " ".join([
        "cd", shlex.quote(str(PROJECT_ROOT)), "&&", "exec env",
        *(shlex.quote(f"{name}={value}") for name, value in env.items()),
        shlex.join(spark_submit_command(settings, script, args)),
    ])
