"""The batch layer's training job: pinned events -> ALS -> holdout evaluation -> registry.

``run`` holds the logic on an injected session; ``main`` is the spark-submit entry
(``spark-submit batch/train.py [--events-version N]``); ``command`` is
``lambdarec train``, which launches the same job through spark-submit.

Every write is keyed by the Delta app transaction ``(train-<table>, model_version)``.
The registry gets a ``training`` row before any factor is written, so a job
killed midway is resumed by the next run under the same model version and the
same events version, and writes nothing twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batch import registry
from batch.evaluate import Holdout, compare_to_popularity
from batch.interactions import holdout_pairs, implicit_ratings, index_ids, split_holdout, with_indices
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import EVENTS, ITEM_FACTORS, MODEL_INTERACTIONS, USER_FACTORS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("lambdarec.batch.train")

ENGINE = "spark-als"
SEED = 42
EVAL_K = 10


def app_id(table: str) -> str:
    """The Delta app-transaction id this job writes ``table`` under."""
    return f"train-{table}"


def plan(lake: Lake, events_version: int | None, model_version: int | None) -> tuple[int, int]:
    """(model_version, events_version) for this run.

    An interrupted run (newest registry row ``training``) is resumed with its own
    events version; a pinned model version already in the registry keeps its
    events version; otherwise a new version trains on the given or latest events.
    """
    statuses = registry.current_statuses(lake)
    if model_version is None:
        newest = max(statuses, default=None)
        resumable = newest is not None and statuses[newest]["status"] == registry.TRAINING
        if resumable and events_version in (None, statuses[newest]["source_events_version"]):
            model_version = newest
        else:
            model_version = registry.next_model_version(lake)
    if events_version is None and model_version in statuses:
        events_version = statuses[model_version]["source_events_version"]
    if events_version is None:
        events_version = lake.version(EVENTS)
        if events_version is None:
            raise RuntimeError(f"no events table at {lake.uri(EVENTS)}: ingest events before training")
    return model_version, events_version


def als_params(settings: Settings) -> dict[str, Any]:
    return {
        "rank": settings.als_rank,
        "regParam": settings.als_reg,
        "alpha": settings.als_alpha,
        "maxIter": settings.als_iterations,
        "seed": SEED,
        "holdout_fraction": settings.holdout_fraction,
        "event_weights": settings.event_weights,
        "eval_k": EVAL_K,
    }


def run(
    spark: "SparkSession",
    settings: Settings,
    events_version: int | None = None,
    model_version: int | None = None,
) -> dict[str, Any]:
    """Train, evaluate and register one model; returns a summary of what happened."""
    lake = Lake(settings)
    model_version, events_version = plan(lake, events_version, model_version)
    params = als_params(settings)
    base = {"source_events_version": events_version, "engine": ENGINE, "params": params}
    registry.record_status(
        lake, model_version, registry.TRAINING, "training started", app_id=app_id("models-training"), **base
    )
    _log("train_started", model_version=model_version, events_version=events_version)
    try:
        return _train(spark, settings, lake, model_version, events_version, base)
    except Exception as exc:
        owned = registry.current_statuses(lake).get(model_version, {}).get("status") == registry.TRAINING
        if not owned:  # a failed redo must not unpublish a finished model
            raise
        registry.record_status(
            lake,
            model_version,
            registry.FAILED,
            f"{type(exc).__name__}: {exc}"[:1000],
            app_id=app_id("models-failed"),
            **base,
        )
        raise


@dataclass(frozen=True)
class Prepared:
    """The cached frames one training run reads more than once."""

    train_ratings: "DataFrame"  # (user_id, item_id, rating, n_events) before the holdout cut
    test_events: "DataFrame"
    users: "DataFrame"  # (user_id, user_index)
    items: "DataFrame"  # (item_id, item_index)
    train: "DataFrame"  # (user_index, item_index, rating): what ALS fits

    @classmethod
    def from_events(cls, events: "DataFrame", settings: Settings) -> "Prepared":
        train_events, test_events = split_holdout(events, settings.holdout_fraction)
        train_ratings = implicit_ratings(train_events, settings.event_weights).cache()
        users = index_ids(train_ratings, "user_id", "user_index").cache()
        items = index_ids(train_ratings, "item_id", "item_index").cache()
        train = with_indices(train_ratings, users, items).select("user_index", "item_index", "rating")
        return cls(train_ratings, test_events, users, items, train.cache())

    def unpersist(self) -> None:
        for frame in (self.train_ratings, self.users, self.items, self.train):
            frame.unpersist()


def fit_als(spark: "SparkSession", train: "DataFrame", settings: Settings):
    """Implicit-feedback ALS with the settings' hyperparameters and a fixed seed."""
    from pyspark.ml.recommendation import ALS

    spark.sparkContext.setCheckpointDir(str(Path(settings.checkpoint_root) / "batch-als"))
    blocks = max(2, settings.spark_shuffle_partitions)
    return ALS(
        rank=settings.als_rank,
        maxIter=settings.als_iterations,
        regParam=settings.als_reg,
        alpha=settings.als_alpha,
        implicitPrefs=True,
        nonnegative=False,
        seed=SEED,
        userCol="user_index",
        itemCol="item_index",
        ratingCol="rating",
        numUserBlocks=blocks,
        numItemBlocks=blocks,
    ).fit(train)


def _train(
    spark: "SparkSession",
    settings: Settings,
    lake: Lake,
    model_version: int,
    events_version: int,
    base: dict[str, Any],
) -> dict[str, Any]:
    data = Prepared.from_events(lake.read_spark(spark, EVENTS, events_version), settings)
    try:
        counts = {
            "n_interactions": data.train.count(),
            "n_users": data.users.count(),
            "n_items": data.items.count(),
        }
        if counts["n_interactions"] == 0:
            raise ValueError(f"events version {events_version} holds no weighted interactions to train on")
        model = fit_als(spark, data.train, settings)
        metrics = _evaluate(model, data, settings, counts)
        _log("train_evaluated", model_version=model_version, **metrics)
        written = {
            spec.name: lake.append_spark(spec, df, app_id=app_id(spec.name), txn_version=model_version)
            for spec, df in _outputs(model, data, model_version).items()
        }
    finally:
        data.unpersist()

    fields = {**base, **counts, "metrics": metrics}
    registry.record_status(
        lake, model_version, registry.CANDIDATE, "trained and evaluated",
        app_id=app_id("models-candidate"), **fields,
    )
    status, reason = publish_decision(metrics)
    registry.record_status(lake, model_version, status, reason, app_id=app_id(f"models-{status}"), **fields)
    _log("train_finished", model_version=model_version, status=status, reason=reason)
    return {
        "model_version": model_version,
        "status": status,
        "status_reason": reason,
        "source_events_version": events_version,
        "metrics": metrics,
        "written": written,
        **counts,
    }


def _outputs(model, data: Prepared, model_version: int) -> dict:
    """The factor and interaction tables of this model version, keyed by table spec."""
    from pyspark.sql import functions as F

    version = F.lit(model_version).alias("model_version")
    return {
        USER_FACTORS: model.userFactors.withColumnRenamed("id", "user_index")
        .join(data.users, "user_index")
        .select(version, "user_index", "user_id", F.col("features").alias("factors")),
        ITEM_FACTORS: model.itemFactors.withColumnRenamed("id", "item_index")
        .join(data.items, "item_index")
        .select(version, "item_index", "item_id", F.col("features").alias("factors")),
        MODEL_INTERACTIONS: data.train.select(version, "user_index", "item_index", "rating"),
    }


def _evaluate(model, data: Prepared, settings: Settings, counts: dict[str, int]) -> dict[str, Any]:
    """Collect factors and holdout pairs (models here are small) and score them in numpy."""
    from pyspark.sql import functions as F

    n_users, n_items = counts["n_users"], counts["n_items"]
    user_factors = _dense(model.userFactors.toPandas(), n_users, settings.als_rank)
    item_factors = _dense(model.itemFactors.toPandas(), n_items, settings.als_rank)
    seen = data.train.select("user_index", "item_index").toPandas()
    held = (
        holdout_pairs(implicit_ratings(data.test_events, settings.event_weights), data.train_ratings)
        .join(data.users, "user_id")
        .join(data.items, "item_id", "left")
        .select("user_index", F.coalesce("item_index", F.lit(-1)).alias("item_index"))
        .toPandas()
    )
    holdout = Holdout.from_pairs(
        n_users, n_items, seen.user_index, seen.item_index, held.user_index, held.item_index
    )
    if len(holdout.users) == 0:
        return {"n_eval_users": 0}
    return compare_to_popularity(user_factors, item_factors, holdout, EVAL_K)


def _dense(factors, n_rows: int, rank: int) -> np.ndarray:
    """ALS factors (id, features) as an (n_rows, rank) array; rows ALS never saw stay zero."""
    dense = np.zeros((n_rows, rank), dtype=np.float32)
    if len(factors):
        dense[factors["id"].to_numpy()] = np.stack(factors["features"].to_numpy())
    return dense


def publish_decision(metrics: dict[str, Any]) -> tuple[str, str]:
    """Publish only a model that beats the popularity baseline on the same holdout."""
    model = metrics.get(f"model_recall_at_{EVAL_K}")
    baseline = metrics.get(f"popularity_recall_at_{EVAL_K}")
    if model is None or baseline is None:
        return registry.REJECTED, "no held-out events to evaluate on"
    verdict = f"recall@{EVAL_K} {model:.4f} vs popularity {baseline:.4f}"
    if model > baseline:
        return registry.PUBLISHED, f"beats popularity: {verdict}"
    return registry.REJECTED, f"does not beat popularity: {verdict}"


def _log(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="batch/train.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events-version",
        type=int,
        default=None,
        help="Train on this events table version (default: latest).",
    )
    parser.add_argument(
        "--model-version",
        type=int,
        default=None,
        help="Redo this model version (default: resume an interrupted one, else the next).",
    )


def job_args(args: argparse.Namespace) -> list[str]:
    """The job's own arguments, as spark-submit passes them on."""
    out = []
    if args.events_version is not None:
        out += ["--events-version", str(args.events_version)]
    if args.model_version is not None:
        out += ["--model-version", str(args.model_version)]
    return out


def main(argv: list[str]) -> int:
    """spark-submit entry point: wiring only."""
    from lambdarec.spark import build_spark

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    settings = Settings()
    spark = build_spark(settings, "lambdarec-train")
    try:
        summary = run(spark, settings, args.events_version, args.model_version)
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
