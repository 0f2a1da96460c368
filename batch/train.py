"""The batch layer's training job: pinned events -> model families -> holdout -> refit -> gate -> registry.

Every configured model family (``batch.families``: ALS, EASE), tuned on a validation
split when tuning is on, is fitted on the training split and scored on the same
holdout; the best one by the gate metric is refitted with its parameters on the
whole pinned snapshot (the holdout is each user's freshest events: the published
model must not lose them), and that refit is written and gated. The registry row
keeps the holdout metrics that chose it and every family's entry.

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
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch import families, gate, tuning
from batch.factor_tables import interaction_rows
from batch.interactions import trainable_events
from batch.train_args import add_arguments, job_args, parse_args, with_engine
from batch.train_data import Prepared
from batch.train_metrics import coverage, holdout_metrics, holdout_of
from batch.train_plan import SEED, app_id, claim
from lambdarec import registry
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import EVENTS, MODEL_INTERACTIONS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["add_arguments", "command", "main", "run"]  # add_arguments and command: the `lambdarec train` hooks

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



class StageClock:
    """Seconds per stage of a run, each from the end of the one before (the registry keeps them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._since = time.monotonic()

    def done(self, stage: str) -> None:
        now = time.monotonic()
        self.seconds[stage] = round(now - self._since, 2)
        self._since = now


def _train(
    spark: "SparkSession",
    settings: Settings,
    lake: Lake,
    model_version: int,
    events_version: int,
    base: dict[str, Any],
) -> dict[str, Any]:
    """Every family competes on the holdout; the winner is refitted on the whole snapshot and written."""
    stages = StageClock()
    events = lake.read_spark(spark, EVENTS, events_version)  # time travel to the pinned version
    events, dropped = trainable_events(events, settings.event_limits)  # a bad row costs the row, not the model
    if dropped:
        _log("events_dropped", model_version=model_version, reasons=dropped)
    checkpoints = str(Path(settings.checkpoint_root) / "batch-als")
    data = Prepared.from_events(spark, lake, events, settings, model_version)
    try:
        if data.train.count() == 0:
            raise ValueError(f"events version {events_version} holds no weighted interactions to train on")
        stages.done("prepare")
        winner, evaluated, tuning, compared = _compete(spark, lake, settings, data, checkpoints, model_version)
        stages.done("evaluate")
    finally:
        data.unpersist()
    whole = Prepared.whole(spark, lake, events, data.rate, model_version)
    try:
        counts = {"n_interactions": whole.train.count(), "n_users": whole.users.num_rows, "n_items": whole.items.num_rows}
        trained = families.fit(winner, whole, settings, checkpoints)
        stages.done("refit")
        metrics = {**evaluated, **coverage(trained, whole), "families": compared, "dropped_events": dropped}
        _log("train_refitted", model_version=model_version, family=winner.family, **counts)
        rows = {spec: spark.createDataFrame(table) for spec, table in trained.tables(model_version, whole).items()}
        rows[MODEL_INTERACTIONS] = interaction_rows(whole.train, model_version)
        written = {
            spec.name: lake.append_spark(spec, frame, app_id=app_id(spec.name), txn_version=model_version)
            for spec, frame in rows.items()
        }
        stages.done("write")
    finally:
        whole.unpersist()
    metrics["stage_seconds"] = stages.seconds

    params = {**base["params"], **winner.record(settings), **({"tuning": tuning} if tuning else {})}
    fields = {**base, **counts, "engine": winner.engine_id(settings), "params": params, "metrics": metrics}
    registry.record_status(
        lake, model_version, registry.CANDIDATE, "trained and evaluated",
        app_id=app_id("models-candidate"), spark=spark, **fields,
    )
    return {
        "model_version": model_version,
        "status": registry.CANDIDATE,
        "status_reason": "trained and evaluated",
        "source_events_version": events_version,
        "engine": fields["engine"],
        "metrics": metrics,
        "written": written,
        **counts,
    }


def _compete(spark, lake, settings, data: Prepared, checkpoints: str, model_version: int):
    """(winning candidate, its holdout metrics, its search or None, every family's entry): each family,
    tuned when tuning is on, fitted on the training split and scored on the same holdout."""
    metric = f"model_{settings.gate_metric_name}"
    holdout = holdout_of(data, settings.eval_max_users, SEED)
    compared: list[dict[str, Any]] = []
    best: tuple[families.Candidate, dict[str, Any], dict[str, Any] | None] | None = None
    inner: Prepared | None = None
    try:
        for family in settings.model_families:
            reason = families.sits_out(family, data.items.num_rows, settings)
            if reason is not None:
                compared.append({"family": family, "skipped": reason})
                continue
            candidate, tuning = families.defaults(family, settings, SEED), None
            if settings.tune_trials:
                inner = inner or data.validation(spark, lake, settings, model_version)
                candidate, tuning = _tune(settings, inner, candidate, checkpoints, model_version)
            started = time.monotonic()
            metrics = holdout_metrics(families.fit(candidate, data, settings, checkpoints), holdout, settings.eval_k)
            entry = {
                "family": family, "engine": candidate.engine_id(settings), "params": candidate.params.record(),
                metric: metrics.get(metric), "fit_and_score_s": round(time.monotonic() - started, 2),
            }
            compared.append({**entry, **({"tuning": tuning} if tuning else {})})
            _log("family_evaluated", model_version=model_version, **entry)
            if best is None or metrics.get(metric, -1.0) > best[1].get(metric, -1.0):
                best = (candidate, metrics, tuning)
    finally:
        if inner is not None:
            inner.unpersist()
    if best is None:
        raise ValueError(f"no model family can fit this snapshot: {compared}")
    return (*best, compared)


def _tune(settings: Settings, inner: Prepared, base: families.Candidate, checkpoints: str, model_version: int):
    """The family's best hyperparameters on a validation split of the training events."""
    holdout = holdout_of(inner, settings.eval_max_users, SEED)
    metric = f"model_{settings.gate_metric_name}"

    def score(params) -> float:
        trained = families.fit(replace(base, params=params), inner, settings, checkpoints)
        return holdout_metrics(trained, holdout, settings.eval_k).get(metric, 0.0)

    result = tuning.search(
        score, base.params, families.tune_space(base.family, settings), settings.tune_method,
        settings.tune_trials, settings.tune_budget_s, min_gain=settings.tune_min_gain,
    )
    _log("tuned", model_version=model_version, family=base.family, metric=metric, best=result["best"],
         trials=len(result["trials"]), elapsed_s=result["elapsed_s"])
    best = replace(base, params=replace(base.params, **result["best"]["params"]))
    return best, {**result, "metric": f"validation {metric}"}


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
    from lambdarec.submit import run_spark_job

    return run_spark_job(settings, "batch/train.py", job_args(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
