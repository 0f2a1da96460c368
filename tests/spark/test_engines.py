"""One contract both ALS engines pass (in the manner of benfred/implicit's shared test mixins).

Each engine is fitted once on planted-structure data; the contract is what the
rest of the platform relies on: the factor layout, determinism under a seed,
serving's fold-in reproducing the stored user vectors (with the engine's
``reg_scaling``), and a clear win over popularity on a held-out split.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from batch.engines import AlsParams, ImplicitAls, SparkAls, confidence_matrix
from batch.evaluate import Holdout, compare_to_popularity, factor_scorer
from deploy.generator import World
from lambdarec.model_bundle import gram
from serving.foldin import fold_in
from lambdarec.confidence import Confidence

pytestmark = pytest.mark.spark

# log confidence: Spark gets the scaled rating (alpha 1), implicit the confidence matrix; serving's
# fold-in must reproduce both engines' user vectors from the raw ratings
PARAMS = AlsParams(rank=12, reg=0.05, alpha=5.0, iterations=8, seed=7, checkpoint_interval=2, scaling="log")


def planted_rows():
    """(user, item, rating) train rows with gaps in the indices, and held-out pairs per user."""
    world = World(n_users=160, n_items=240, n_clusters=6, seed=11)
    events = list(world.events(5000, end=datetime(2025, 3, 1, tzinfo=UTC)))
    users = np.array([int(e["user_id"].split("-")[1]) * 2 for e in events])  # even indices only
    items = np.array([int(e["item_id"].split("-")[1]) for e in events])
    last = {}
    for position, user in enumerate(users):
        last.setdefault(user, []).append(position)
    test = {p for positions in last.values() if len(positions) > 4 for p in positions[-len(positions) // 5 :]}
    is_test = np.array([p in test for p in range(len(users))])
    pairs = {(u, i) for u, i in zip(users[~is_test], items[~is_test], strict=True)}
    ratings = {}
    for u, i in zip(users[~is_test], items[~is_test], strict=True):
        ratings[(u, i)] = ratings.get((u, i), 0.0) + 1.0
    ratings[next(iter(sorted(ratings)))] = -2.0  # one dislike: confidence without preference
    rows = [(int(u), int(i), float(r)) for (u, i), r in sorted(ratings.items())]
    held = sorted({(int(u), int(i)) for u, i in zip(users[is_test], items[is_test], strict=True) if (u, i) not in pairs})
    return rows, held


class EngineContract:
    """Subclasses provide the ``engine`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, spark, engine, data, tmp_path_factory):
        rows, _ = data
        df = spark.createDataFrame(rows, "user_index int, item_index int, rating float")
        checkpoints = str(tmp_path_factory.mktemp("checkpoints"))
        return engine.fit(spark, df, PARAMS, checkpoints), engine.fit(spark, df, PARAMS, checkpoints)

    def test_factors_cover_exactly_the_trained_indices(self, fitted, data):
        factors, _ = fitted
        rows, _ = data
        assert sorted(factors.user_index.tolist()) == sorted({u for u, _, _ in rows})
        assert sorted(factors.item_index.tolist()) == sorted({i for _, i, _ in rows})
        assert factors.users.shape == (len(factors.user_index), PARAMS.rank)
        assert factors.items.dtype == np.float32 and factors.users.dtype == np.float32
        assert np.isfinite(factors.users).all() and np.isfinite(factors.items).all()

    def test_same_seed_same_factors(self, fitted):
        first, second = fitted
        order = np.argsort(first.user_index), np.argsort(second.user_index)
        np.testing.assert_allclose(first.users[order[0]], second.users[order[1]], rtol=1e-4, atol=1e-5)

    def test_fold_in_reproduces_the_stored_user_vectors(self, engine, fitted, data):
        factors, _ = fitted
        rows, _ = data
        position = {item: p for p, item in enumerate(factors.item_index.tolist())}
        yty = gram(factors.items)
        worst = 0.0
        for u, stored in zip(factors.user_index.tolist(), factors.users, strict=True):
            mine = [(position[i], r) for uu, i, r in rows if uu == u]
            ratings = np.array([r for _, r in mine])
            n_u = max(int((ratings > 0).sum()), 1)
            # fold_in scales reg by n_u; a constant-regularised engine needs reg / n_u there
            reg = PARAMS.reg if engine.reg_scaling == "per_interaction" else PARAMS.reg / n_u
            x = fold_in(factors.items, yty, np.array([p for p, _ in mine]), ratings, reg, PARAMS.confidence())
            worst = max(worst, np.abs(x - stored).max() / max(np.abs(stored).max(), 1e-3))
        assert worst < 1e-3, f"largest relative difference from the stored vectors: {worst:.2e}"

    def test_beats_popularity_clearly_on_planted_data(self, fitted, data):
        factors, _ = fitted
        rows, held = data
        n_users, n_items = 320, 240
        holdout = Holdout.from_pairs(
            n_users, n_items, [u for u, _, _ in rows], [i for _, i, _ in rows],
            [u for u, _ in held], [i for _, i in held],
        )
        metrics = compare_to_popularity(factor_scorer(factors.dense_users(n_users), factors.dense_items(n_items)), holdout, 10)
        assert metrics["n_eval_users"] > 100
        assert metrics["model_recall_at_10"] > 1.5 * metrics["popularity_recall_at_10"], metrics


@pytest.fixture(scope="module")
def data():
    return planted_rows()


class TestSparkAls(EngineContract):
    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls):
        return SparkAls(blocks=2)


class TestImplicitAls(EngineContract):
    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls):
        return ImplicitAls()


def test_confidence_matrix_follows_sparks_convention():
    users, items, ratings = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([2.0, -1.0, 0.0, 1.0])
    m = confidence_matrix(users, items, ratings, Confidence("linear", 3.0))
    assert m.toarray().tolist() == [[7.0, -4.0], [0.0, 4.0]]
    assert m.nnz == 3
    logged = confidence_matrix(users, items, ratings, Confidence("log", 3.0, epsilon=1.0)).toarray()
    assert np.allclose(logged, [[1 + 3 * np.log(3), -(1 + 3 * np.log(2))], [0.0, 1 + 3 * np.log(2)]])


@pytest.mark.parametrize("scaling", ["linear", "log", "binary"])
def test_sparks_scaled_rating_is_the_confidence_serving_uses(spark, scaling):
    confidence = Confidence(scaling, alpha=2.5, epsilon=0.5)
    ratings = [3.0, -1.5, 0.0, 0.25]
    frame = spark.createDataFrame([(r,) for r in ratings], "rating double")
    scaled = [row[0] for row in frame.select(confidence.extra_column(frame["rating"])).collect()]
    assert np.allclose(np.abs(scaled), confidence.extra(np.array(ratings)))
    assert np.array_equal(np.sign(scaled), np.sign(ratings))
