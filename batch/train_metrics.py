"""A trained model's figures: holdout ranking metrics next to popularity, and factor coverage."""

from __future__ import annotations

from typing import Any

import numpy as np

from batch.engines import Factors
from batch.evaluate import Holdout, compare_to_popularity
from batch.interactions import holdout_pairs
from batch.train_data import Prepared
from lambdarec.settings import Settings


def holdout_metrics(factors: Factors, data: Prepared, settings: Settings) -> dict[str, Any]:
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


def coverage(factors: Factors, data: Prepared) -> dict[str, Any]:
    """Shares of active users and items (any weighted event in the snapshot) with a usable vector."""
    from pyspark.sql import functions as F

    active = data.all_ratings.agg(F.countDistinct("user_id"), F.countDistinct("item_id")).first()
    assert active is not None  # an aggregate has one row
    usable_users = usable(factors.users)
    usable_items = usable(factors.items)
    return {
        "user_coverage": float(usable_users.sum()) / max(active[0], 1),
        "item_coverage": float(usable_items.sum()) / max(active[1], 1),
        "nan_factors": int((~np.isfinite(factors.users)).any(axis=1).sum() + (~np.isfinite(factors.items)).any(axis=1).sum()),
    }


def usable(vectors: np.ndarray) -> np.ndarray:
    """Rows that are finite and not all zero (a zero vector recommends nothing)."""
    return np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
