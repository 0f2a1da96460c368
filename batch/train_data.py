"""The frames one training run reads: the pinned events, split for the holdout, as indexed ratings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import pyarrow as pa

from batch import idmap
from batch.interactions import implicit_ratings, split_holdout, with_indices
from batch.train_plan import SEED
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import ITEM_IDS, USER_IDS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


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
        # Every id of the snapshot is mapped now, in the run's one mapping commit: the refit on the
        # whole snapshot (``whole``) needs the held-out users' and items' indexes too.
        _mapped(spark, lake, rate(events), model_version)
        split = split_holdout(events, settings.holdout_fraction, settings.eval_split, settings.eval_cutoff, SEED)
        return cls.from_split(spark, lake, *split, events, rate, model_version)

    @classmethod
    def whole(cls, spark: "SparkSession", lake: Lake, events: "DataFrame", rate, model_version: int) -> "Prepared":
        """Every event of the snapshot as training data, nothing held out: what the published model refits on."""
        return cls.from_split(spark, lake, events, events.limit(0), events, rate, model_version)

    @classmethod
    def from_split(cls, spark, lake: Lake, train_events, test_events, events, rate, model_version: int) -> "Prepared":
        train_ratings = rate(train_events).cache()
        users, items = _mapped(spark, lake, train_ratings, model_version)
        train = with_indices(train_ratings, spark.createDataFrame(users), spark.createDataFrame(items))
        train = train.select("user_index", "item_index", "rating").cache()
        return cls(train_events, train_ratings, rate(test_events), rate(events), users, items, train, rate)

    def validation(self, spark, lake: Lake, settings: Settings, model_version: int) -> "Prepared":
        """The training events split once more, for tuning; the test holdout stays unseen.

        Above ``tune_max_events`` training events, a seeded sample of users (all of
        each one's events) keeps every trial's fit small."""
        from pyspark.sql import functions as F

        method = "time" if settings.eval_split == "cutoff" else settings.eval_split
        events = self.train_events
        n_events = events.count()
        if n_events > settings.tune_max_events:
            share = settings.tune_max_events / n_events
            sampled = F.abs(F.xxhash64("user_id", F.lit(SEED))) % 1_000_000 < int(share * 1_000_000)
            events = events.where(sampled)
        split = split_holdout(events, settings.holdout_fraction or 0.2, method, None, SEED)
        return Prepared.from_split(spark, lake, *split, events, self.rate, model_version)

    def unpersist(self) -> None:
        for frame in (self.train_ratings, self.train):
            frame.unpersist()


def _mapped(spark, lake: Lake, ratings: "DataFrame", model_version: int) -> tuple[pa.Table, pa.Table]:
    """(user mapping, item mapping) of the ids in ``ratings``, mapping any new one first."""
    users, items = (
        ratings.select(column).distinct().toArrow().column(column).to_pylist() for column in ("user_id", "item_id")
    )
    return (
        idmap.ensure_mapped(lake, USER_IDS, users, model_version, spark),
        idmap.ensure_mapped(lake, ITEM_IDS, items, model_version, spark),
    )
