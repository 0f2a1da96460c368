"""Contract: the event rules' Spark spelling (the speed job, training) decides as the Python one (the API edge).

``schemas.event_rules`` keeps both spellings side by side; the same texts, values and
times through both must give the same answers, boundaries included, so a record
written straight to the topic meets the rules a posted event meets.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from schemas.event_rules import (
    EventLimits,
    occurred_at_problem,
    spark_occurred_at_problem,
    spark_text_problem,
    spark_value_problem,
    text_problem,
    value_problem,
)

pytestmark = pytest.mark.spark

LIMITS = EventLimits(value_max=1e6, max_age=timedelta(days=1), max_skew=timedelta(minutes=5))
REFERENCE = datetime(2026, 12, 7, 18, 0, 0, 500_000, tzinfo=UTC)

ACCEPTED = ["item-1", "", "a b", "user@example.com", "Käse", "\u00e9", "日本語", "😀", "ﬁ",  # ﬁ changes only in NFKC
            "\u1e9b\u0323"]  # NFC leaves it: no composite of the two
REFUSED = [
    "e\u0301", "\u212b", "a\u0323\u0301", "\u0041\u030a\u0301",  # not NFC: decomposed, a singleton, composable
    "a\x00", "item\x00", "\x1b[2J\x1b[31mred", "a\x7f", "a\x85b", "tab\t", "new\nline",  # Cc
    "a\u202eb", "a\u2066b", "x\u200dy", "\ufeffa", "a\u00adb", "\U000e0001tag",  # Cf
]
TEXTS = ACCEPTED + REFUSED
VALUES = [None, 0.0, 4.5, 1e6, -1e6, 1e6 + 1e-9 * 1e6, -1_000_001.0, 1.7e308, -1.7e308,
          math.inf, -math.inf, math.nan]
OCCURRED = [
    datetime(1, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    REFERENCE - timedelta(days=1, microseconds=1), REFERENCE - timedelta(days=1), REFERENCE,
    REFERENCE + timedelta(minutes=5), REFERENCE + timedelta(minutes=5, microseconds=1),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
]


def test_texts_are_refused_alike(spark):
    from pyspark.sql import functions as F

    frame = spark.createDataFrame([(t,) for t in TEXTS], "text string")
    refused = {row.text: row.bad for row in frame.select("text", spark_text_problem(F.col("text")).alias("bad")).collect()}
    assert {t: text_problem(t) is not None for t in TEXTS} == {t: t in REFUSED for t in TEXTS}
    assert refused == {t: t in REFUSED for t in TEXTS}
    null = spark.createDataFrame([(None,)], "text string").select(spark_text_problem(F.col("text")).alias("bad"))
    assert null.first().bad in (None, False)  # a missing id has its own rule


def test_values_are_refused_alike(spark):
    from pyspark.sql import functions as F

    frame = spark.createDataFrame([(i, v) for i, v in enumerate(VALUES)], "i int, value double")
    got = {row.i: bool(row.bad) for row in frame.select("i", spark_value_problem(F.col("value"), LIMITS).alias("bad")).collect()}
    assert got == {i: value_problem(v, LIMITS) is not None for i, v in enumerate(VALUES)}
    assert list(got.values()).count(True) == 7


@pytest.mark.parametrize("limits", [LIMITS, EventLimits(value_max=1.0, max_age=None, max_skew=timedelta(0))])
@pytest.mark.parametrize("later", [None, timedelta(hours=1)], ids=["edge", "speed job reading an hour later"])
def test_times_are_judged_alike(spark, limits, later):
    from pyspark.sql import functions as F

    now = None if later is None else REFERENCE + later
    frame = spark.createDataFrame([(i, t, REFERENCE, now) for i, t in enumerate(OCCURRED)],
                                  "i int, occurred timestamp, received timestamp, now timestamp")
    spark_now = None if later is None else F.col("now")
    got = {row.i: row.reason for row in frame.select(
        "i", spark_occurred_at_problem(F.col("occurred"), F.col("received"), limits, spark_now).alias("reason")).collect()}
    assert got == {i: occurred_at_problem(t, REFERENCE, limits, now) for i, t in enumerate(OCCURRED)}
    assert {None, "occurred_at_too_old", "occurred_at_in_future"} <= set(got.values())
