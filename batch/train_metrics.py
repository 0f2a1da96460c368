"""A trained model's figures: holdout ranking metrics next to popularity, and how much it covers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from batch.evaluate import Holdout, compare_to_popularity
from batch.interactions import holdout_pairs
from batch.train_data import Prepared

if TYPE_CHECKING:
    from batch.families import Trained


def holdout_of(data: Prepared, max_users: int, seed: int) -> Holdout:
    """The split's training and held-out pairs by index, collected once for every model scored on it.

    Above ``max_users`` users with held-out items, a seeded sample of them is scored (every
    model and the baseline on the same users): the metrics' error stays small while scoring
    a large catalogue for every user would cost more than the fits."""
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
    held_users = np.unique(held.user_index)
    if len(held_users) > max_users:
        chosen = np.random.default_rng(seed).choice(held_users, max_users, replace=False)
        held = held[np.isin(held.user_index, chosen)]
    return Holdout.from_pairs(
        n_users, n_items, seen.user_index, seen.item_index, held.user_index, held.item_index,
        train_weights=seen.rating,
    )


def holdout_metrics(trained: "Trained", holdout: Holdout, k: int) -> dict[str, Any]:
    """The model's and popularity's metrics at ``k`` on the same holdout (numpy)."""
    if len(holdout.users) == 0:
        return {"n_eval_users": 0}
    return compare_to_popularity(trained.scorer(holdout), holdout, k)


def coverage(trained: "Trained", data: Prepared) -> dict[str, Any]:
    """Shares of active users and items (any weighted event in the snapshot) the model can serve."""
    from pyspark.sql import functions as F

    active = data.all_ratings.agg(F.countDistinct("user_id"), F.countDistinct("item_id")).first()
    assert active is not None  # an aggregate has one row
    users, items = trained.usable()
    return {
        "user_coverage": float(len(users)) / max(active[0], 1),
        "item_coverage": float(len(items)) / max(active[1], 1),
        "nan_factors": trained.invalid_values(),
    }
