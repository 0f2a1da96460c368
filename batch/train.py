"""The batch layer's training job: pinned events -> ALS -> holdout evaluation -> gate -> registry.

``run`` holds the logic on an injected session (its parts: ``train_plan`` claims the
versions, ``train_data`` prepares the frames, ``train_metrics`` scores the holdout,
``factor_tables`` makes the lake rows); ``main`` is the spark-submit entry
(``spark-submit batch/train.py [--events-version N] [--run-key K] [--engine implicit]``);
``command`` is ``lambdarec train``, which launches the same job through spark-submit.

Every write goes through delta-spark (factor tables and interactions as appends,
the id mappings as an insert-only MERGE, registry rows as appends) and is keyed by
the Delta app transaction ``(train-<table>, model_version)``. The snapshot is the
pinned ``events`` version, read by time travel (``versionAsOf``).
The registry gets a ``training`` row before any factor is written, so a job
killed midway is resumed by the next run under the same model version and the
same events version, and writes nothing twice. A scheduler passes its data
interval as ``--run-key``: a re-run of the interval finds its model version again.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch import gate, tuning
from batch.engines import AlsParams, engine
from batch.factor_tables import factor_rows, interaction_rows
from batch.train_args import job_args, parse_args, with_engine
from batch.train_data import Prepared
from batch.train_metrics import coverage, holdout_metrics
from batch.train_plan import als_params, app_id, claim
from lambdarec import registry
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import EVENTS, ITEM_FACTORS, MODEL_INTERACTIONS, USER_FACTORS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("lambdarec.batch.train")




def run(
    spark: "SparkSession",
    settings: Settings,
    events_version: int | None = None,
    model_version: int | None = None,
    run_key: str | None = None,
    publish: bool = True,
) -> dict[str, Any]:
    """Train and evaluate one model, record it as a candidate, then (``publish``) gate it."""
    lake = Lake(settings)
    model_version, events_version, base = claim(lake, settings, events_version, model_version, run_key, spark)
    status = registry.current_statuses(lake)[model_version]
    if status["status"] not in (registry.TRAINING, registry.FAILED):
        _log("train_skipped", model_version=model_version, status=status["status"])
        summary = {"model_version": model_version, "status": status["status"],
                   "status_reason": status["status_reason"], "source_events_version": events_version,
                   "metrics": json.loads(status["metrics"] or "{}"), "written": {}}
        if publish and status["status"] == registry.CANDIDATE:
            summary.update(gate.run(lake, settings, model_version, spark))
        return summary
    _log("train_started", model_version=model_version, events_version=events_version)
    try:
        summary = _train(spark, settings, lake, model_version, events_version, base)
    except Exception as exc:
        owned = registry.current_statuses(lake).get(model_version, {}).get("status") == registry.TRAINING
        if not owned:  # a failed redo must not unpublish a finished model
            raise
        # Through delta-rs: the failure may have been the Spark session's own.
        registry.record_status(
            lake,
            model_version,
            registry.FAILED,
            f"{type(exc).__name__}: {exc}"[:1000],
            app_id=app_id("models-failed"),
            **base,
        )
        raise
    if publish:
        summary.update(gate.run(lake, settings, model_version, spark))
    _log("train_finished", model_version=model_version, status=summary["status"], reason=summary["status_reason"])
    return summary



def _train(
    spark: "SparkSession",
    settings: Settings,
    lake: Lake,
    model_version: int,
    events_version: int,
    base: dict[str, Any],
) -> dict[str, Any]:
    events = lake.read_spark(spark, EVENTS, events_version)  # time travel to the pinned version
    data = Prepared.from_events(spark, lake, events, settings, model_version)
    try:
        counts = {
            "n_interactions": data.train.count(),
            "n_users": data.users.num_rows,
            "n_items": data.items.num_rows,
        }
        if counts["n_interactions"] == 0:
            raise ValueError(f"events version {events_version} holds no weighted interactions to train on")
        checkpoints = str(Path(settings.checkpoint_root) / "batch-als")
        chosen = engine(settings.als_engine, blocks=max(2, settings.spark_shuffle_partitions))
        params = als_params(settings)
        if settings.tune_trials:
            tuned = _tune(spark, lake, settings, data, chosen, params, checkpoints, model_version)
            params = replace(params, **tuned["best"]["params"])
            base = {**base, "params": {**base["params"], **tuned["best"]["params"], "tuning": tuned}}
        factors = chosen.fit(spark, data.train, params, checkpoints)
        metrics = {**holdout_metrics(factors, data, settings), **coverage(factors, data)}
        _log("train_evaluated", model_version=model_version, **metrics)
        user_rows = factor_rows(USER_FACTORS, model_version, factors.user_index, factors.users, data.users)
        item_rows = factor_rows(ITEM_FACTORS, model_version, factors.item_index, factors.items, data.items)
        written = {
            USER_FACTORS.name: lake.append_spark(
                USER_FACTORS, spark.createDataFrame(user_rows),
                app_id=app_id(USER_FACTORS.name), txn_version=model_version,
            ),
            ITEM_FACTORS.name: lake.append_spark(
                ITEM_FACTORS, spark.createDataFrame(item_rows),
                app_id=app_id(ITEM_FACTORS.name), txn_version=model_version,
            ),
            MODEL_INTERACTIONS.name: lake.append_spark(
                MODEL_INTERACTIONS, interaction_rows(data.train, model_version),
                app_id=app_id(MODEL_INTERACTIONS.name), txn_version=model_version,
            ),
        }
    finally:
        data.unpersist()

    fields = {**base, **counts, "metrics": metrics}
    registry.record_status(
        lake, model_version, registry.CANDIDATE, "trained and evaluated",
        app_id=app_id("models-candidate"), spark=spark, **fields,
    )
    return {
        "model_version": model_version,
        "status": registry.CANDIDATE,
        "status_reason": "trained and evaluated",
        "source_events_version": events_version,
        "metrics": metrics,
        "written": written,
        **counts,
    }


def _tune(spark, lake, settings, data: Prepared, chosen, base: AlsParams, checkpoints: str, model_version: int):
    """Search hyperparameters on a validation split of the training events."""
    inner = data.validation(spark, lake, settings, model_version)
    metric = f"model_{settings.gate_metric}_at_{settings.eval_k}"

    def score(params: AlsParams) -> float:
        return holdout_metrics(chosen.fit(spark, inner.train, params, checkpoints), inner, settings).get(metric, 0.0)

    try:
        result = tuning.search(
            score, base, settings.tune_space, settings.tune_method, settings.tune_trials, settings.tune_budget_s
        )
    finally:
        inner.unpersist()
    _log("tuned", model_version=model_version, metric=metric, best=result["best"], trials=len(result["trials"]))
    return {**result, "metric": f"validation {metric}"}




def _log(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))



def main(argv: list[str]) -> int:
    """spark-submit entry point: wiring only."""
    from lambdarec.spark import build_spark

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    settings = with_engine(Settings(), args.engine)
    spark = build_spark(settings, "lambdarec-train")
    try:
        summary = run(
            spark, settings, args.events_version, args.model_version, args.run_key, not args.candidate_only
        )
    finally:
        spark.stop()
    print(json.dumps(summary, default=str), flush=True)
    return 0


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``lambdarec train``: run this job through spark-submit, as a scheduler would."""
    from lambdarec.submit import spark_submit_command, spark_submit_env

    cmd = spark_submit_command(settings, "batch/train.py", job_args(args))
    return subprocess.run(cmd, env=spark_submit_env(settings), check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
