"""Pure transforms from bronze events to the implicit-feedback matrix ALS trains on.

No reads or writes here: every function takes and returns DataFrames, so the
training job, tests and notebooks share one definition of "an interaction".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lambdarec.feedback import event_weight
from schemas.event_rules import OCCURRED_AT_IN_FUTURE, EventLimits, spark_has_control, spark_interval, spark_value_problem

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

MAX_ID_LENGTH = 128  # the event schema's: a model's id arrays are as wide as its longest id


def untrainable_reason(limits: EventLimits) -> "Column":
    """Why an ``events`` row cannot be trained on, as a dead-letter reason, or null.

    Rows landed before the pipeline refused them (or imported) may hold what the
    edge now refuses: an id that is null, empty, over ``MAX_ID_LENGTH`` characters
    or holds a control or format character (a NUL would fail every model bundle,
    ``lambdarec.id_index``); a value that is not finite or beyond ``value_max`` (an
    infinite rating makes every factor NaN); an ``occurred_at`` further past its
    ``received_at`` than the clock skew allows (a year-9999 event would be every
    decayed weight's reference). Imported history is old, not in the future, so no
    age bound applies here.
    """
    from pyspark.sql import functions as F

    def bad_id(column: "Column") -> "Column":
        return column.isNull() | (F.length(column) < 1) | (F.length(column) > MAX_ID_LENGTH) | spark_has_control(column)

    future = F.col("occurred_at") > F.col("received_at") + spark_interval(limits.max_skew)
    return (F.when(bad_id(F.col("user_id")), F.lit("invalid_field:user_id"))
            .when(bad_id(F.col("item_id")), F.lit("invalid_field:item_id"))
            .when(spark_value_problem(F.col("value"), limits), F.lit("invalid_field:value"))
            .when(future, F.lit(OCCURRED_AT_IN_FUTURE)))


def trainable_events(events: "DataFrame", limits: EventLimits) -> tuple["DataFrame", dict[str, int]]:
    """(the events a model can train on, how many were left out by reason): ``untrainable_reason``.

    Counting costs one pass over the snapshot; a run records the counts, so a bad
    row costs the model that row, never the model."""
    from pyspark.sql import functions as F

    reason = untrainable_reason(limits)
    counts = events.select(reason.alias("reason")).where(F.col("reason").isNotNull()).groupBy("reason").count()
    return events.where(reason.isNull()), {row["reason"]: row["count"] for row in counts.collect()}


def implicit_ratings(
    events: "DataFrame",
    event_weights: dict[str, float],
    half_life_days: float = 0.0,
    as_of=None,
    rating_center: float | None = None,
) -> "DataFrame":
    """One row per (user_id, item_id): the sum of its events' weights.

    An event weighs its type's weight times its ``value`` (a quantity; an event
    without one counts as the weight alone). A rating's value is the rating, or
    ``value - rating_center`` when a center is set, so a poor rating becomes
    negative confidence (a dislike; ALS reads r < 0 as "not preferred"). With a half-life, an
    event's weight halves every ``half_life_days`` before ``as_of`` (pass the
    snapshot's newest ``occurred_at`` so the result depends on the snapshot alone).
    Event types without a weight carry no signal and are dropped.
    """
    from pyspark.sql import functions as F

    weight = event_weight(F.col("event_type"), F.col("value"), event_weights, rating_center)
    if half_life_days > 0:
        if as_of is None:
            raise ValueError("time decay needs as_of, the instant weights are decayed to")
        age_days = (F.lit(as_of).cast("double") - F.col("occurred_at").cast("double")) / 86_400.0
        weight = weight * F.pow(F.lit(0.5), F.greatest(age_days, F.lit(0.0)) / F.lit(float(half_life_days)))
    return (
        events.select("user_id", "item_id", weight.alias("weight"))
        .where(F.col("weight").isNotNull())
        .groupBy("user_id", "item_id")
        .agg(F.sum("weight").alias("rating"), F.count(F.lit(1)).alias("n_events"))
    )


def with_indices(ratings: "DataFrame", users: "DataFrame", items: "DataFrame") -> "DataFrame":
    """Ratings with user_index and item_index; pairs whose user or item is unindexed drop out."""
    return ratings.join(users, "user_id").join(items, "item_id")


SPLITS = ("time", "cutoff", "random")


def split_holdout(
    events: "DataFrame",
    holdout_fraction: float,
    method: str = "time",
    cutoff=None,
    seed: int = 42,
) -> tuple["DataFrame", "DataFrame"]:
    """(train, test) events for offline evaluation.

    ``time``: the last ``holdout_fraction`` of each user's events go to test (ties
    in ``occurred_at`` broken by ``event_id``). ``random``: the same share per user,
    chosen by a seeded hash of ``event_id`` (deterministic, no time order).
    ``cutoff``: every event after ``cutoff`` is test, whatever the user.
    Per-user counts are rounded up, but every user keeps at least one training
    event, so a user with one event stays entirely in train.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if method not in SPLITS:
        raise ValueError(f"split method must be one of {SPLITS}, got {method!r}")
    if method == "cutoff":
        if cutoff is None:
            raise ValueError("the cutoff split needs a cutoff timestamp")
        is_test = F.col("occurred_at") > F.lit(cutoff)
        return events.where(~is_test), events.where(is_test)
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be within [0, 1), got {holdout_fraction}")
    per_user = Window.partitionBy("user_id")
    if method == "time":
        ordered = per_user.orderBy("occurred_at", "event_id")
    else:
        ordered = per_user.orderBy(F.xxhash64("event_id", F.lit(seed)), "event_id")
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
