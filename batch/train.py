"""The batch layer's training job: pinned events -> ALS -> holdout evaluation -> gate -> registry.

``run`` holds the logic on an injected session; ``main`` is the spark-submit entry
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
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import pyarrow as pa

from batch import gate, idmap, tuning
from batch.engines import AlsParams, Factors, engine
from batch.evaluate import Holdout, compare_to_popularity
from batch.interactions import holdout_pairs, implicit_ratings, split_holdout, with_indices
from lambdarec import registry
from lambdarec.lake import Lake
from lambdarec.settings import AlsEngine, Settings
from schemas.tables import EVENTS, ITEM_FACTORS, ITEM_IDS, MODEL_INTERACTIONS, USER_FACTORS, USER_IDS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("lambdarec.batch.train")

SEED = 42


def app_id(table: str) -> str:
    """The Delta app-transaction id this job writes ``table`` under."""
    return f"train-{table}"


def plan(
    lake: Lake, events_version: int | None, model_version: int | None, run_key: str | None = None
) -> tuple[int, int]:
    """(model_version, events_version) for this run.

    A run key already in the registry gets its own model and events versions
    back. An interrupted run (newest registry row ``training``) is resumed with its
    own events version; a pinned model version already in the registry keeps its
    events version; otherwise a new version trains on the given or latest events.
    """
    if run_key is not None and model_version is None:
        known = registry.find_run(lake, run_key)
        if known is not None:
            return known["model_version"], known["source_events_version"]
    statuses = registry.current_statuses(lake)
    if model_version is None:
        newest = max(statuses, default=None)
        if (
            newest is not None
            and statuses[newest]["status"] == registry.TRAINING
            and run_key is None
            and events_version in (None, statuses[newest]["source_events_version"])
        ):
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


def als_params(settings: Settings) -> AlsParams:
    return AlsParams(
        rank=settings.als_rank,
        reg=settings.als_reg,
        alpha=settings.als_alpha,
        iterations=settings.als_iterations,
        seed=SEED,
        checkpoint_interval=settings.als_checkpoint_interval,
    )


def recorded_params(settings: Settings, run_key: str | None) -> dict[str, Any]:
    """Everything that shaped the model, as stored in its registry rows."""
    return {
        **als_params(settings).record(),
        "engine": settings.als_engine,
        "reg_scaling": engine(settings.als_engine).reg_scaling,
        "event_weights": settings.event_weights,
        "decay_half_life_days": settings.decay_half_life_days,
        "rating_center": settings.rating_center,
        "split": settings.eval_split,
        "holdout_fraction": settings.holdout_fraction,
        "eval_cutoff": settings.eval_cutoff.isoformat() if settings.eval_cutoff else None,
        "eval_k": settings.eval_k,
        "id_mapping": [USER_IDS.name, ITEM_IDS.name],
        "run_key": run_key,
    }


def claim(
    lake: Lake,
    settings: Settings,
    events_version: int | None = None,
    model_version: int | None = None,
    run_key: str | None = None,
    spark: "SparkSession | None" = None,
) -> tuple[int, int, dict[str, Any]]:
    """Pin (model_version, events_version) and record the ``training`` row; no Spark needed
    (a Spark job passes its session and the row goes through delta-spark)."""
    model_version, events_version = plan(lake, events_version, model_version, run_key)
    base = {
        "source_events_version": events_version,
        "engine": engine(settings.als_engine).name,
        "params": recorded_params(settings, run_key),
    }
    registry.record_status(
        lake, model_version, registry.TRAINING, "training started", app_id=app_id("models-training"), spark=spark, **base
    )
    return model_version, events_version, base


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


@dataclass(frozen=True)
class Prepared:
    """The cached frames one training run (or one tuning split) reads more than once."""

    train_events: "DataFrame"
    train_ratings: "DataFrame"  # (user_id, item_id, rating, n_events) before the holdout cut
    test_ratings: "DataFrame"
    all_ratings: "DataFrame"  # every event's interactions: who and what is active
    users: pa.Table  # (user_id, user_index), stable across runs
    items: pa.Table  # (item_id, item_index)
    train: "DataFrame"  # (user_index, item_index, rating): what ALS fits
    rate: Callable[["DataFrame"], "DataFrame"]  # events -> ratings, as configured

    @classmethod
    def from_events(
        cls, spark: "SparkSession", lake: Lake, events: "DataFrame", settings: Settings, model_version: int
    ) -> "Prepared":
        from pyspark.sql import functions as F

        as_of = None
        if settings.decay_half_life_days > 0:
            newest_event = events.agg(F.max("occurred_at")).first()
            assert newest_event is not None  # an aggregate has one row
            as_of = newest_event[0]
        rate = partial(
            implicit_ratings,
            event_weights=settings.event_weights,
            half_life_days=settings.decay_half_life_days,
            as_of=as_of,
            rating_center=settings.rating_center,
        )
        split = split_holdout(events, settings.holdout_fraction, settings.eval_split, settings.eval_cutoff, SEED)
        return cls.from_split(spark, lake, *split, events, rate, model_version)

    @classmethod
    def from_split(cls, spark, lake: Lake, train_events, test_events, events, rate, model_version: int) -> "Prepared":
        train_ratings = rate(train_events).cache()
        ids = train_ratings.select("user_id", "item_id").toArrow()
        users = idmap.ensure_mapped(lake, USER_IDS, ids.column("user_id").to_pylist(), model_version, spark)
        items = idmap.ensure_mapped(lake, ITEM_IDS, ids.column("item_id").to_pylist(), model_version, spark)
        train = with_indices(train_ratings, spark.createDataFrame(users), spark.createDataFrame(items))
        train = train.select("user_index", "item_index", "rating").cache()
        return cls(train_events, train_ratings, rate(test_events), rate(events), users, items, train, rate)

    def validation(self, spark, lake: Lake, settings: Settings, model_version: int) -> "Prepared":
        """The training events split once more, for tuning; the test holdout stays unseen."""
        method = "time" if settings.eval_split == "cutoff" else settings.eval_split
        split = split_holdout(self.train_events, settings.holdout_fraction or 0.2, method, None, SEED)
        return Prepared.from_split(spark, lake, *split, self.train_events, self.rate, model_version)

    def unpersist(self) -> None:
        for frame in (self.train_ratings, self.train):
            frame.unpersist()


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
        metrics = {**_evaluate(factors, data, settings), **_coverage(factors, data)}
        _log("train_evaluated", model_version=model_version, **metrics)
        user_rows = _factor_rows(USER_FACTORS, model_version, factors.user_index, factors.users, data.users)
        item_rows = _factor_rows(ITEM_FACTORS, model_version, factors.item_index, factors.items, data.items)
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
                MODEL_INTERACTIONS, _interactions(data.train, model_version),
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
        return _evaluate(chosen.fit(spark, inner.train, params, checkpoints), inner, settings).get(metric, 0.0)

    try:
        result = tuning.search(
            score, base, settings.tune_space, settings.tune_method, settings.tune_trials, settings.tune_budget_s
        )
    finally:
        inner.unpersist()
    _log("tuned", model_version=model_version, metric=metric, best=result["best"], trials=len(result["trials"]))
    return {**result, "metric": f"validation {metric}"}


def _interactions(train: "DataFrame", model_version: int) -> "DataFrame":
    from pyspark.sql import functions as F

    return train.select(F.lit(model_version).alias("model_version"), "user_index", "item_index", "rating")


def _factor_rows(spec, model_version: int, index: np.ndarray, vectors: np.ndarray, mapping: pa.Table) -> pa.Table:
    """One factor table's rows: (model_version, index, id, factors), ids looked up in the mapping."""
    id_col, index_col = idmap.columns(USER_IDS if spec is USER_FACTORS else ITEM_IDS)
    lookup = dict(zip(mapping.column(index_col).to_pylist(), mapping.column(id_col).to_pylist(), strict=True))
    rank = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), pa.float32())
    offsets = pa.array(np.arange(0, (len(index) + 1) * rank, rank, dtype=np.int32))
    return pa.table(
        {
            "model_version": pa.array(np.full(len(index), model_version), pa.int64()),
            index_col: pa.array(index, pa.int32()),
            id_col: pa.array([lookup[int(i)] for i in index], pa.string()),
            "factors": pa.ListArray.from_arrays(offsets, flat),
        },
        schema=spec.schema,
    )


def _evaluate(factors: Factors, data: Prepared, settings: Settings) -> dict[str, Any]:
    """Score the holdout in numpy against the popularity baseline on the same split."""
    from pyspark.sql import functions as F

    spark = data.train.sparkSession
    n_users = int(max(data.users.column("user_index").to_pylist(), default=-1)) + 1
    n_items = int(max(data.items.column("item_index").to_pylist(), default=-1)) + 1
    seen: Any = data.train.select("user_index", "item_index", "rating").toPandas()
    held: Any = (
        holdout_pairs(data.test_ratings.where(F.col("rating") > 0), data.train_ratings)
        .join(spark.createDataFrame(data.users), "user_id")
        .join(spark.createDataFrame(data.items), "item_id", "left")
        .select("user_index", F.coalesce("item_index", F.lit(-1)).alias("item_index"))
        .toPandas()
    )
    holdout = Holdout.from_pairs(
        n_users, n_items, seen.user_index, seen.item_index, held.user_index, held.item_index,
        train_weights=seen.rating,
    )
    if len(holdout.users) == 0:
        return {"n_eval_users": 0}
    return compare_to_popularity(factors.dense_users(n_users), factors.dense_items(n_items), holdout, settings.eval_k)


def _coverage(factors: Factors, data: Prepared) -> dict[str, Any]:
    """Shares of active users and items (any weighted event in the snapshot) with a usable vector."""
    from pyspark.sql import functions as F

    active = data.all_ratings.agg(F.countDistinct("user_id"), F.countDistinct("item_id")).first()
    assert active is not None  # an aggregate has one row
    usable_users = _usable(factors.users)
    usable_items = _usable(factors.items)
    return {
        "user_coverage": float(usable_users.sum()) / max(active[0], 1),
        "item_coverage": float(usable_items.sum()) / max(active[1], 1),
        "nan_factors": int((~np.isfinite(factors.users)).any(axis=1).sum() + (~np.isfinite(factors.items)).any(axis=1).sum()),
    }


def _usable(vectors: np.ndarray) -> np.ndarray:
    """Rows that are finite and not all zero (a zero vector recommends nothing)."""
    return np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)


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
    parser.add_argument(
        "--run-key",
        default=None,
        help="Idempotency key, e.g. the scheduler's data interval: a re-run finds its model again.",
    )
    parser.add_argument(
        "--engine", choices=get_args(AlsEngine), default=None, help="ALS engine (default: settings)."
    )
    parser.add_argument(
        "--candidate-only",
        action="store_true",
        help="Stop after recording the candidate; the publish gate runs as its own step.",
    )


def job_args(args: argparse.Namespace) -> list[str]:
    """The job's own arguments, as spark-submit passes them on."""
    out = []
    if args.events_version is not None:
        out += ["--events-version", str(args.events_version)]
    if args.model_version is not None:
        out += ["--model-version", str(args.model_version)]
    if args.run_key is not None:
        out += ["--run-key", args.run_key]
    if args.engine is not None:
        out += ["--engine", args.engine]
    if args.candidate_only:
        out += ["--candidate-only"]
    return out


def with_engine(settings: Settings, name: str | None) -> Settings:
    return settings if name is None else settings.model_copy(update={"als_engine": name})


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
