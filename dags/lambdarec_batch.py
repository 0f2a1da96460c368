"""Airflow DAG: retrain, evaluate and publish the ALS model every hour.

Thin on purpose: the logic lives in ``batch/train.py`` and the task runs it with
``spark-submit``, as a data engineer would. Nothing heavy is imported when the
DAG file is parsed (no Spark, no platform modules): the command is built when
the task runs, from the worker's ``LAMBDAREC_*`` environment. Training resumes an
interrupted model version, so a retry never writes anything twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task


@dag(
    dag_id="lambdarec_batch",
    description="Train ALS on a pinned events version, evaluate on a holdout, publish if better.",
    schedule="@hourly",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # one training at a time: model versions are allocated in order
    default_args={
        "owner": "lambdarec",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=1),
    },
    params={
        "events_version": Param(None, type=["null", "integer"], description="Pin an events version."),
    },
    tags=["lambdarec", "batch", "spark"],
)
def lambdarec_batch():
    @task.bash(task_id="train_als")
    def train_als(params: dict | None = None) -> str:
        """The spark-submit command line for ``batch/train.py``.

        Settings come from the worker's environment; the job gets the same
        ``LAMBDAREC_*`` variables (inherited), an absolute lake root and this
        interpreter for its Python workers. Secrets stay out of the logged command.
        """
        import shlex
        import sys

        from lambdarec.settings import Settings
        from lambdarec.submit import PROJECT_ROOT, spark_submit_command

        settings = Settings()
        args = []
        events_version = (params or {}).get("events_version")
        if events_version is not None:
            args += ["--events-version", str(events_version)]
        env = {
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "LAMBDAREC_ROOT": str(settings.root.resolve()),
        }
        command = spark_submit_command(settings, "batch/train.py", args)
        return " ".join(
            [
                "cd",
                shlex.quote(str(PROJECT_ROOT)),
                "&&",
                "exec env",
                *(shlex.quote(f"{name}={value}") for name, value in env.items()),
                shlex.join(command),
            ]
        )

    train_als()


lambdarec_batch()
