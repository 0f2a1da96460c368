"""Serving's numpy fold-in reproduces Spark ALS's own user vectors (implicitPrefs).

Spark's last half-iteration solves every user against the final item factors, so
folding a training user in against ``itemFactors`` must give ``userFactors``
back. This pins serving's normal equations to Spark's definition.
"""

import numpy as np
import pytest

from lambdarec.model_bundle import gram
from lambdarec.confidence import Confidence
from serving.foldin import fold_in

pytestmark = pytest.mark.spark

RANK, REG, ALPHA = 4, 0.15, 3.0


@pytest.fixture(scope="module")
def trained(spark):
    from pyspark.ml.recommendation import ALS

    rng = np.random.default_rng(42)
    rows = []
    for user in range(25):
        for item in rng.choice(18, size=rng.integers(2, 9), replace=False):
            # mostly positive implicit weights, a few negatives (confidence without preference)
            rating = float(rng.choice([1.0, 2.0, 4.0, 8.0, -1.0], p=[0.3, 0.3, 0.2, 0.1, 0.1]))
            rows.append((user, int(item), rating))
    df = spark.createDataFrame(rows, "user int, item int, rating float")
    model = ALS(
        rank=RANK, maxIter=6, regParam=REG, alpha=ALPHA, implicitPrefs=True, seed=3,
        userCol="user", itemCol="item", ratingCol="rating", numUserBlocks=2, numItemBlocks=2,
    ).fit(df)
    items = {r["id"]: np.asarray(r["features"]) for r in model.itemFactors.collect()}
    users = {r["id"]: np.asarray(r["features"]) for r in model.userFactors.collect()}
    return rows, items, users


def test_fold_in_reproduces_spark_user_factors(trained):
    rows, items, users = trained
    item_ids = sorted(items)
    position = {item: p for p, item in enumerate(item_ids)}
    y = np.stack([items[i] for i in item_ids]).astype(np.float32)
    yty = gram(y)
    worst = 0.0
    for user, expected in users.items():
        mine = [(position[i], r) for u, i, r in rows if u == user]
        positions = np.asarray([p for p, _ in mine])
        ratings = np.asarray([r for _, r in mine], dtype=np.float32)
        x = fold_in(y, yty, positions, ratings, REG, Confidence("linear", ALPHA))  # Spark ML's own: c = 1 + alpha * |r|
        worst = max(worst, np.abs(x - expected).max() / max(np.abs(expected).max(), 1e-3))
    assert len(users) == 25
    assert worst < 1e-5, f"largest relative difference from Spark's userFactors: {worst:.2e}"
