"""A trained model's rows for the lake: factor tables and the interactions it was fitted on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from batch import idmap
from schemas.tables import ITEM_IDS, USER_FACTORS, USER_IDS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


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
    offsets = pa.array(np.arange(0, (len(index) + 1) * rank, rank, dtype=np.int32))
    return pa.table(
        {
            "model_version": pa.array(np.full(len(index), model_version), pa.int64()),
            index_col: pa.array(index, pa.int32()),
            id_col: pa.array([lookup[int(i)] for i in index], pa.string()),
            "factors": pa.ListArray.from_arrays(offsets, flat),
        },
        schema=spec.schema,
    )
