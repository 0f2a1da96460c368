"""Event -> interaction transforms on the shared local Spark session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batch.interactions import holdout_pairs, implicit_ratings, split_holdout, with_indices

pytestmark = pytest.mark.spark

T0 = datetime(2025, 1, 1, tzinfo=UTC)
WEIGHTS = {"view": 1.0, "purchase": 8.0, "rating": 2.0}


def frame(spark, rows):
    """Events with the columns the transforms read, in the events table's types."""
    return spark.createDataFrame(
        [(f"e{i}", u, it, t, v, T0 + timedelta(minutes=m)) for i, (u, it, t, v, m) in enumerate(rows)],
        "event_id string, user_id string, item_id string, event_type string, value double, "
        "occurred_at timestamp",
    )


def test_ratings_sum_weights_and_scale_ratings_by_value(spark):
    events = frame(
        spark,
        [
            ("u1", "a", "view", None, 0),
            ("u1", "a", "view", None, 1),
            ("u1", "a", "purchase", None, 2),
            ("u1", "b", "rating", 4.0, 3),
            ("u1", "b", "rating", None, 4),  # no value: the weight alone
            ("u2", "a", "share", None, 5),  # no weight configured: no signal
            ("u2", "c", "purchase", 3.0, 6),  # a quantity multiplies the weight
        ],
    )
    ratings = implicit_ratings(events, WEIGHTS).collect()
    got = {(r.user_id, r.item_id): (r.rating, r.n_events) for r in ratings}
    assert got == {("u1", "a"): (10.0, 3), ("u1", "b"): (10.0, 2), ("u2", "c"): (24.0, 1)}


def test_empty_weights_are_refused(spark):
    with pytest.raises(ValueError, match="event_weights is empty"):
        implicit_ratings(frame(spark, [("u1", "a", "view", None, 0)]), {})


def test_time_decay_halves_weights_every_half_life(spark):
    events = frame(spark, [("u1", "a", "purchase", None, 0), ("u1", "b", "view", None, 2 * 24 * 60)])
    as_of = T0 + timedelta(days=2)
    got = {r.item_id: r.rating for r in implicit_ratings(events, WEIGHTS, 1.0, as_of).collect()}
    assert got == pytest.approx({"a": 8.0 / 4, "b": 1.0})
    with pytest.raises(ValueError, match="as_of"):
        implicit_ratings(events, WEIGHTS, half_life_days=1.0)


def test_rating_center_turns_poor_ratings_into_dislikes(spark):
    events = frame(spark, [("u1", "a", "rating", 5.0, 0), ("u1", "b", "rating", 1.0, 1), ("u1", "c", "rating", 3.0, 2)])
    got = {r.item_id: r.rating for r in implicit_ratings(events, WEIGHTS, rating_center=3.0).collect()}
    assert got == {"a": 4.0, "b": -4.0, "c": 0.0}


def test_holdout_takes_each_users_latest_events(spark):
    rows = [("u1", f"i{m}", "view", None, m) for m in range(10)]  # 10 events: last 2 held out
    rows += [("u2", "x", "view", None, 0)]  # one event: stays in train
    rows += [("u3", "p", "view", None, 5), ("u3", "q", "view", None, 1)]  # 2 events: the later one held out
    train, test = split_holdout(frame(spark, rows), 0.2)
    held = sorted((r.user_id, r.item_id) for r in test.collect())
    assert held == [("u1", "i8"), ("u1", "i9"), ("u3", "p")]
    assert train.count() + test.count() == len(rows)
    assert train.columns == test.columns == frame(spark, rows).columns


def test_holdout_fraction_zero_holds_nothing_and_bad_fractions_fail(spark):
    events = frame(spark, [("u1", "a", "view", None, m) for m in range(5)])
    assert split_holdout(events, 0.0)[1].count() == 0
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_holdout(events, 1.0)


def test_holdout_pairs_drop_items_seen_in_training_and_indices_join(spark):
    events = frame(
        spark,
        [("u1", item, "view", None, minute) for minute, item in enumerate(["a", "b", "a", "c"])],
    )
    train_events, test_events = split_holdout(events, 0.5)
    train = implicit_ratings(train_events, WEIGHTS)
    pairs = holdout_pairs(implicit_ratings(test_events, WEIGHTS), train)
    assert sorted((r.user_id, r.item_id) for r in pairs.collect()) == [("u1", "c")]
    users = spark.createDataFrame([("u1", 0)], "user_id string, user_index int")
    items = spark.createDataFrame([("a", 0), ("b", 1)], "item_id string, item_index int")
    indexed = with_indices(train, users, items).collect()
    assert sorted((r.user_index, r.item_index, r.rating) for r in indexed) == [(0, 0, 1.0), (0, 1, 1.0)]


def test_random_split_holds_the_same_share_per_user_reproducibly(spark):
    rows = [("u1", f"i{m}", "view", None, m) for m in range(10)] + [("u2", "x", "view", None, 0)]
    train, test = split_holdout(frame(spark, rows), 0.2, method="random", seed=3)
    held = sorted((r.user_id, r.item_id) for r in test.collect())
    assert len(held) == 2 and {u for u, _ in held} == {"u1"}
    again = sorted((r.user_id, r.item_id) for r in split_holdout(frame(spark, rows), 0.2, "random", seed=3)[1].collect())
    assert again == held and train.count() == 9


def test_cutoff_split_holds_everything_after_the_cutoff(spark):
    rows = [("u1", "a", "view", None, 0), ("u1", "b", "view", None, 10), ("u2", "c", "view", None, 20)]
    train, test = split_holdout(frame(spark, rows), 0.2, method="cutoff", cutoff=T0 + timedelta(minutes=5))
    assert sorted(r.item_id for r in test.collect()) == ["b", "c"]
    assert [r.item_id for r in train.collect()] == ["a"]
    with pytest.raises(ValueError, match="needs a cutoff"):
        split_holdout(frame(spark, rows), 0.2, method="cutoff")
    with pytest.raises(ValueError, match="split method"):
        split_holdout(frame(spark, rows), 0.2, method="sideways")
