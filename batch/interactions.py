"""Pure transforms from bronze events to the implicit-feedback matrix ALS trains on.

No reads or writes here: every function takes and returns DataFrames, so the
training job, tests and notebooks share one definition of "an interaction".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def implicit_ratings(events: "DataFrame", event_weights: dict[str, float]) -> "DataFrame":
    """One row per (user_id, item_id): the sum of its events' weights.

    A rating event weighs its ``value`` times the ``rating`` weight (a rating
    without a value counts as the weight alone). Event types without a weight
    carry no signal and are dropped.
    """
    from pyspark.sql import functions as F

    if not event_weights:
        raise ValueError("event_weights is empty: no event type would count as an interaction")
    weights = F.create_map(*[F.lit(x) for pair in sorted(event_weights.items()) for x in pair])
    weight = weights[F.col("event_type")].cast("double")
    weight = F.when(
        F.col("event_type") == "rating", weight * F.coalesce(F.col("value"), F.lit(1.0))
    ).otherwise(weight)
    return (
        events.select("user_id", "item_id", weight.alias("weight"))
        .where(F.col("weight").isNotNull())
        .groupBy("user_id", "item_id")
        .agg(F.sum("weight").alias("rating"), F.count(F.lit(1)).alias("n_events"))
    )


def index_ids(df: "DataFrame", id_column: str, index_column: str) -> "DataFrame":
    """Dense 0-based int indices over the sorted distinct ids of ``id_column``.

    Sorting makes the mapping a function of the id set alone, so the same snapshot
    always gets the same indices (ALS needs int ids, and seeds are only
    reproducible over a reproducible input).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ids = df.select(id_column).where(F.col(id_column).isNotNull()).distinct()
    # One partition for the ranking is fine: it holds one short string per id.
    rank = F.row_number().over(Window.orderBy(id_column)) - 1
    return ids.select(id_column, rank.cast("int").alias(index_column))


def with_indices(ratings: "DataFrame", users: "DataFrame", items: "DataFrame") -> "DataFrame":
    """Ratings with user_index and item_index; pairs whose user or item is unindexed drop out."""
    return ratings.join(users, "user_id").join(items, "item_id")


def split_holdout(events: "DataFrame", holdout_fraction: float) -> tuple["DataFrame", "DataFrame"]:
    """(train, test) events: the last ``holdout_fraction`` of each user's events go to test.

    The count held out is rounded up, but every user keeps at least one training
    event, so a user with one event stays entirely in train. Ties in
    ``occurred_at`` are broken by ``event_id`` so the split is deterministic.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be within [0, 1), got {holdout_fraction}")
    per_user = Window.partitionBy("user_id")
    ordered = per_user.orderBy("occurred_at", "event_id")
    n = F.count(F.lit(1)).over(per_user)
    n_test = F.least(F.ceil(n * F.lit(holdout_fraction)), n - 1)
    marked = events.withColumn("_is_test", F.row_number().over(ordered) > n - n_test)
    train = marked.where(~F.col("_is_test")).drop("_is_test")
    test = marked.where(F.col("_is_test")).drop("_is_test")
    return train, test


def holdout_pairs(test_ratings: "DataFrame", train_ratings: "DataFrame") -> "DataFrame":
    """The held-out (user_id, item_id) pairs, minus pairs already seen in training.

    A recommender never re-recommends training items, so those pairs could never
    be hit and would only blur the metric.
    """
    return (
        test_ratings.select("user_id", "item_id")
        .join(train_ratings.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti")
    )
