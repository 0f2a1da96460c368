"""ALS engines: Spark ML on a cluster, or the ``implicit`` library on one node.

Both fit the same implicit-feedback model on ``(user_index, item_index, rating)``
rows, with one confidence (``lambdarec.confidence``: c = 1 + alpha * s(|r|),
preference r > 0), and both hand back the same ``Factors``, so everything downstream (factor tables,
registry rows, serving) is engine-agnostic. One real difference is recorded in
``reg_scaling``: Spark multiplies the regularisation by a row's positive-interaction count
(``per_interaction``), implicit adds it as is (``constant``). Serving's fold-in honours it.
In both engines the user factors are the last thing solved, against the final
item factors, so folding a training user in reproduces its stored vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from lambdarec.confidence import Confidence
from lambdarec.settings import AlsEngine

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class AlsParams:
    """ALS hyperparameters in the platform's vocabulary (``lambdarec.settings.ALS_PARAMS``);
    each engine translates them to its library's names."""

    rank: int
    reg: float
    alpha: float
    iterations: int
    seed: int = 42
    checkpoint_interval: int = 5
    scaling: str = "linear"
    epsilon: float = 1.0

    def confidence(self) -> Confidence:
        return Confidence(self.scaling, self.alpha, self.epsilon)

    def record(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Factors:
    """Latent vectors by index: only indices present in the training rows appear."""

    user_index: np.ndarray  # (n_users,) int
    users: np.ndarray  # (n_users, rank) float32
    item_index: np.ndarray
    items: np.ndarray

    def dense_users(self, n_rows: int) -> np.ndarray:
        return _dense(self.user_index, self.users, n_rows)

    def dense_items(self, n_rows: int) -> np.ndarray:
        return _dense(self.item_index, self.items, n_rows)


def _dense(index: np.ndarray, vectors: np.ndarray, n_rows: int) -> np.ndarray:
    """Vectors placed at their index in an (n_rows, rank) array; other rows stay zero."""
    dense = np.zeros((n_rows, vectors.shape[1]), dtype=np.float32)
    dense[index] = vectors
    return dense


class Engine(Protocol):
    name: AlsEngine
    reg_scaling: str

    def fit(self, spark: "SparkSession", train: "DataFrame", params: AlsParams, checkpoint_dir: str) -> Factors:
        """Fit on (user_index, item_index, rating) rows."""


class SparkAls:
    """pyspark.ml ALS, checkpointing its lineage so many iterations cannot overflow the stack."""

    name: AlsEngine = "spark"
    reg_scaling = "per_interaction"

    def __init__(self, blocks: int = 2):
        self.blocks = blocks

    def fit(self, spark, train, params, checkpoint_dir):
        from pyspark.ml.recommendation import ALS

        spark.sparkContext.setCheckpointDir(checkpoint_dir)
        # Spark's own confidence is 1 + alpha * |r|: hand it the scaled extra confidence with alpha 1
        train = train.withColumn("rating", params.confidence().extra_column(train["rating"]))
        model = ALS(
            rank=params.rank,
            maxIter=params.iterations,
            regParam=params.reg,
            alpha=1.0,
            implicitPrefs=True,
            nonnegative=False,
            seed=params.seed,
            checkpointInterval=params.checkpoint_interval,
            userCol="user_index",
            itemCol="item_index",
            ratingCol="rating",
            numUserBlocks=self.blocks,
            numItemBlocks=self.blocks,
        ).fit(train)
        users, items = model.userFactors.toArrow(), model.itemFactors.toArrow()
        return Factors(
            user_index=users["id"].to_numpy(),
            users=_matrix(users["features"], params.rank),
            item_index=items["id"].to_numpy(),
            items=_matrix(items["features"], params.rank),
        )


def _matrix(column: pa.ChunkedArray, rank: int) -> np.ndarray:
    """An Arrow column of rank-length float lists as an (n, rank) float32 matrix (no Python objects)."""
    if len(column) == 0:
        return np.zeros((0, rank), dtype=np.float32)
    values = pc.list_flatten(column).to_numpy()
    return values.reshape(len(column), rank).astype(np.float32, copy=False)


class ImplicitAls:
    """implicit.cpu ALS on the driver: the rows are collected into one sparse matrix."""

    name: AlsEngine = "implicit"
    reg_scaling = "constant"

    def fit(self, spark, train, params, checkpoint_dir):
        rows = train.select("user_index", "item_index", "rating").toArrow()
        return fit_implicit(
            rows.column("user_index").to_numpy(),
            rows.column("item_index").to_numpy(),
            rows.column("rating").to_numpy().astype(np.float64),
            params,
        )


def confidence_matrix(
    users: np.ndarray, items: np.ndarray, ratings: np.ndarray, confidence: Confidence
) -> sparse.csr_matrix:
    """The confidence in implicit's encoding: |value| = c(r), sign = preference.

    implicit reads a positive value v as preference 1 with confidence v, and a
    negative one as preference 0 with confidence -v; r = 0 carries nothing.
    """
    keep = ratings != 0
    values = np.sign(ratings[keep]) * (1.0 + confidence.extra(ratings[keep]))
    shape = (int(users.max()) + 1, int(items.max()) + 1) if len(users) else (0, 0)
    matrix = sparse.csr_matrix((values.astype(np.float32), (users[keep], items[keep])), shape=shape)
    matrix.sum_duplicates()
    return matrix


def fit_implicit(
    users: np.ndarray, items: np.ndarray, ratings: np.ndarray, params: AlsParams, use_cg: bool = True
) -> Factors:
    """implicit's ALS (conjugate gradient), then an exact Cholesky solve of every user.

    ``use_cg=False`` solves every row exactly in each iteration too, as Spark ALS does
    (slower; ``bench/train.py --implicit-exact`` compares the solvers with it).
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    cui = confidence_matrix(users, items, ratings, params.confidence())
    with threadpool_limits(1, "blas"):  # implicit parallelises itself; BLAS threads would fight it
        model = AlternatingLeastSquares(
            factors=params.rank,
            regularization=params.reg,
            alpha=1.0,  # already applied in confidence_matrix
            iterations=params.iterations,
            random_state=params.seed,
            calculate_training_loss=False,
            use_cg=use_cg,
        )
        model.fit(cui, show_progress=False)
        present_users = np.unique(users)
        user_vectors = model.recalculate_user(present_users, cui[present_users])
    present_items = np.unique(items)
    return Factors(
        user_index=present_users,
        users=np.asarray(user_vectors, dtype=np.float32),
        item_index=present_items,
        items=np.asarray(model.item_factors[present_items], dtype=np.float32),
    )


ENGINES = {SparkAls.name: SparkAls, ImplicitAls.name: ImplicitAls}


def engine(name: str, blocks: int = 2) -> Engine:
    if name not in ENGINES:
        raise ValueError(f"unknown ALS engine {name!r}; choose one of {sorted(ENGINES)}")
    return SparkAls(blocks) if name == SparkAls.name else ImplicitAls()
