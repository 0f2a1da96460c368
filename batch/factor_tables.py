"""A trained model's rows for the lake: factor tables, item-item weights and the interactions it was fitted on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from batch import idmap
from schemas.tables import ITEM_IDS, ITEM_NEIGHBOURS, USER_FACTORS, USER_IDS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from batch.ease import ItemWeights


def interaction_rows(train: "DataFrame", model_version: int) -> "DataFrame":
    """``model_interactions`` rows: what the model was fitted on."""
    from pyspark.sql import functions as F

    return train.select(F.lit(model_version).alias("model_version"), "user_index", "item_index", "rating")


def factor_rows(spec, model_version: int, index: np.ndarray, vectors: np.ndarray, mapping: pa.Table) -> pa.Table:
    """One factor table's rows: (model_version, index, id, factors), ids looked up in the mapping."""
    id_col, index_col = idmap.columns(USER_IDS if spec is USER_FACTORS else ITEM_IDS)
    lookup = dict(zip(mapping.column(index_col).to_pylist(), mapping.column(id_col).to_pylist(), strict=True))
    rank = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), pa.float32())
    offsets = pa.array(np.arange(len(index) + 1, dtype=np.int32) * rank)
    return pa.table(
        {
            "model_version": pa.array(np.full(len(index), model_version), pa.int64()),
            index_col: pa.array(index, pa.int32()),
            id_col: pa.array([lookup[int(i)] for i in index], pa.string()),
            "factors": pa.ListArray.from_arrays(offsets, flat),
        },
        schema=spec.schema,
    )


def neighbour_rows(model_version: int, weights: "ItemWeights") -> pa.Table:
    """``item_neighbours`` rows: per item (by index), the items its row of B scores and the weights."""
    b = weights.weights
    offsets = pa.array(b.indptr.astype(np.int32))
    return pa.table(
        {
            "model_version": pa.array(np.full(b.shape[0], model_version), pa.int64()),
            "item_index": pa.array(weights.item_index, pa.int32()),
            "neighbours": pa.ListArray.from_arrays(offsets, pa.array(weights.item_index[b.indices], pa.int32())),
            "weights": pa.ListArray.from_arrays(offsets, pa.array(b.data, pa.float32())),
        },
        schema=ITEM_NEIGHBOURS.schema,
    )
