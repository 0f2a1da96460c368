"""Airflow DAG: every hour, snapshot -> train and evaluate -> publish or reject -> reload serving.

Thin on purpose: the logic lives in ``batch/``; training runs ``batch/train.py``
through ``spark-submit``, as a data engineer would, and the light steps run
in the worker. Nothing heavy is imported when the file is parsed (no Spark, no
platform modules); settings come from the worker's ``LAMBDAREC_*`` environment.

Every task is idempotent per data interval: the run key (the interval's end,
or the run id of a run without one) pins one model version and one events
version in the registry, so a retry or a re-run of the interval resumes that
model and writes nothing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

DEFAULT_ARGS = {
    "owner": "lambdarec",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(hours=1),
}


def run_key() -> str:
    """This run's idempotency key: its data interval's end, else its run id."""
    context = get_current_context()
    end = context.get("data_interval_end")
    return end.isoformat() if end is not None else context["dag_run"].run_id


@dag(
    dag_id="lambdarec_batch",
    description="Train ALS on a pinned events version, evaluate on a holdout, publish if not worse.",
    schedule="@hourly",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # one training at a time: model versions are allocated in order
    default_args=DEFAULT_ARGS,
    params={
        "events_version": Param(None, type=["null", "integer"], description="Pin an events version."),
        "engine": Param(None, type=["null", "string"], enum=[None, "spark", "implicit"],
                        description="ALS engine (default: LAMBDAREC_ALS_ENGINE)."),
    },
    tags=["lambdarec", "batch", "spark"],
)
def lambdarec_batch():
    @task(task_id="snapshot")
    def snapshot(params: dict | None = None) -> dict:
        """Pin the events version and claim the model version for this data interval."""
        from batch.train_args import with_engine
        from batch.train_plan import claim
        from lambdarec.lake import Lake
        from lambdarec.settings import Settings

        settings = with_engine(Settings(), (params or {}).get("engine"))
        key = run_key()
        model_version, events_version, _ = claim(
            Lake(settings), settings, (params or {}).get("events_version"), run_key=key
        )
        return {"model_version": model_version, "events_version": events_version, "run_key": key}

    @task.bash(task_id="train")
    def train(pinned: dict, params: dict | None = None) -> str:
        """spark-submit ``batch/train.py`` on the pinned versions: families on the holdout, the best refitted, candidate row."""
        from argparse import Namespace

        from batch.train_args import job_args
        from lambdarec.settings import Settings
        from lambdarec.submit import spark_submit_bash

        args = job_args(Namespace(
            events_version=pinned["events_version"], model_version=pinned["model_version"],
            run_key=pinned["run_key"], engine=(params or {}).get("engine") or None, candidate_only=True,
        ))
        return spark_submit_bash(Settings(), "batch/train.py", args)

    @task(task_id="publish_or_reject")
    def publish_or_reject(pinned: dict) -> dict:
        """The publish gate: publish only a sound model that is not worse than the champion."""
        from batch import gate
        from lambdarec.lake import Lake
        from lambdarec.settings import Settings

        settings = Settings()
        return gate.run(Lake(settings), settings, pinned["model_version"])

    @task(task_id="reload_serving")
    def reload_serving(decision: dict) -> dict:
        """Tell serving to load the published model now (skipped when no serving_url is set), presenting
        ``api_key`` (scope admin; `lambdarec up` provisions one for its Airflow)."""
        import logging

        import httpx

        from lambdarec.api_keys import bearer
        from lambdarec.settings import Settings

        settings = Settings()
        if not settings.serving_url:
            logging.getLogger(__name__).info("serving_url is empty: not asking serving to reload")
            return {"skipped": True, **decision}
        response = httpx.post(f"{settings.serving_url.rstrip('/')}/admin/reload", headers=bearer(settings),
                              timeout=120.0)
        if response.status_code in (401, 403):  # a retry cannot fix a credential: fail now, saying what to set
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"serving refused the reload ({response.status_code}: {response.text[:300]}); "
                                       "set LAMBDAREC_API_KEY in the workers' environment to a key with the admin scope")
        response.raise_for_status()
        return {"skipped": False, **decision, **response.json()}

    pinned = snapshot()
    trained = train(pinned)
    decision = publish_or_reject(pinned)
    trained >> decision
    reload_serving(decision)


lambdarec_batch()
