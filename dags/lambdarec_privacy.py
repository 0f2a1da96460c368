"""Airflow DAG: carry out pending erasure requests every 10 minutes and write their receipts.

Requests come from ``DELETE /v1/users/{id}``, ``lambdarec erase`` and consent
withdrawals (with ``erasure_on_withdrawal``); each is recorded before it is
acknowledged, so this DAG only has to find them. The logic is
``batch/erasure.py``, run by ``spark-submit``; a run that finds the speed job
behind leaves the request pending (exit code 3 fails the task, which retries).
Re-running is safe: a completed request is never done twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task


@dag(
    dag_id="lambdarec_privacy",
    description="Erase users from every layer (lake, speed state, models) and write the receipts.",
    schedule=timedelta(minutes=10),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "lambdarec",
        "retries": 3,
        "retry_delay": timedelta(minutes=2),
        "execution_timeout": timedelta(hours=1),
    },
    tags=["lambdarec", "privacy", "spark"],
)
def lambdarec_privacy():
    @task.bash(task_id="erase")
    def erase() -> str:
        """spark-submit batch/erasure.py: every pending request, oldest first."""
        from lambdarec.settings import Settings
        from lambdarec.submit import spark_submit_bash

        return spark_submit_bash(Settings(), "batch/erasure.py")

    erase()


lambdarec_privacy()
