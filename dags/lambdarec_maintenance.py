"""Airflow DAG: daily lake housekeeping (compact small files, vacuum, expire old models).

The logic is ``batch/maintenance.py``; each step is its own task so a failed
vacuum can be retried without redoing the compaction. Every step is safe to
re-run. Nothing heavy is imported when the file is parsed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task


def _step(name: str) -> dict:
    from batch import maintenance
    from lambdarec.settings import Settings

    return maintenance.run(Settings(), (name,))


@dag(
    dag_id="lambdarec_maintenance",
    description="Compact small Delta files, vacuum beyond the retention window, expire old models.",
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
    tags=["lambdarec", "maintenance"],
)
def lambdarec_maintenance():
    @task(task_id="compact")
    def compact() -> dict:
        """Rewrite each table's small files into larger ones (rows unchanged)."""
        return _step("compact")

    @task(task_id="vacuum")
    def vacuum() -> dict:
        """Delete files no snapshot within LAMBDAREC_VACUUM_RETENTION_HOURS references."""
        return _step("vacuum")

    @task(task_id="expire_models")
    def expire_models() -> dict:
        """Drop factor data beyond LAMBDAREC_MODEL_RETENTION models (never the champion)."""
        return _step("expire")

    compact() >> vacuum() >> expire_models()


lambdarec_maintenance()
