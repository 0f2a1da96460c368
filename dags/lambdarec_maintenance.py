"""Airflow DAG: daily lake housekeeping (prune the speed tables to the speed view's horizon, compact small
files, vacuum, expire old models).

The logic is ``batch/maintenance.py``, a Spark job (Delta's OPTIMIZE, VACUUM and
DELETE through delta-spark); each step is its own ``spark-submit`` from a bash
task, so a failed vacuum can be retried without redoing the compaction. Every
step is safe to re-run. Nothing heavy is imported when the file is parsed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task


def submit(step: str) -> str:
    """The bash line that spark-submits ``batch/maintenance.py --step <step>``."""
    from lambdarec.settings import Settings
    from lambdarec.submit import spark_submit_bash

    return spark_submit_bash(Settings(), "batch/maintenance.py", ["--step", step])


@dag(
    dag_id="lambdarec_maintenance",
    description="Prune the speed tables to the speed view's horizon, compact small Delta files, vacuum beyond "
    "the retention window, expire old models.",
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "lambdarec",
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=2),
    },
    tags=["lambdarec", "maintenance", "spark"],
)
def lambdarec_maintenance():
    @task.bash(task_id="prune_speed")
    def prune_speed() -> str:
        """DELETE speed-table rows older than LAMBDAREC_SPEED_VIEW_HORIZON_S: serving's start-up reads no more."""
        return submit("prune")

    @task.bash(task_id="compact")
    def compact() -> str:
        """OPTIMIZE: rewrite each table's small files into larger ones (rows unchanged)."""
        return submit("compact")

    @task.bash(task_id="vacuum")
    def vacuum() -> str:
        """VACUUM files no snapshot within LAMBDAREC_VACUUM_RETENTION_HOURS references."""
        return submit("vacuum")

    @task.bash(task_id="expire_models")
    def expire_models() -> str:
        """DELETE factor data beyond LAMBDAREC_MODEL_RETENTION models (never the champion)."""
        return submit("expire")

    prune_speed() >> compact() >> vacuum() >> expire_models()


lambdarec_maintenance()
