"""Stable id -> index mappings kept in Delta (``user_ids``, ``item_ids``) across training runs.

ALS needs int ids. Numbering the ids of each snapshot afresh would give the same
user another index in every model, so nothing could be compared or carried over
between versions. Here an id keeps the index it first got, and new ids are
numbered after the highest index so far, in sorted order (a function of the
snapshot alone, so a re-run assigns the same numbers). Each run's additions are
one commit keyed by the app transaction ``(idmap-<table>, model_version)``: inside a
Spark job an insert-when-not-matched Delta MERGE keyed by id, elsewhere a delta-rs append.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lambdarec.lake import Lake
from schemas.tables import TableSpec

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def columns(spec: TableSpec) -> tuple[str, str]:
    """(id column, index column) of a mapping table."""
    return spec.columns[0], spec.columns[1]


def new_rows(existing: pa.Table, ids: Iterable[str], spec: TableSpec, model_version: int) -> pa.Table:
    """Mapping rows for the ``ids`` not in ``existing``: sorted, numbered after its highest index."""
    id_col, index_col = columns(spec)
    known = set(existing.column(id_col).to_pylist())
    fresh = sorted({i for i in ids if i is not None} - known)
    start = (pc.max(existing.column(index_col)).as_py() + 1) if existing.num_rows else 0
    return pa.table(
        {
            id_col: pa.array(fresh, pa.string()),
            index_col: pa.array(np.arange(start, start + len(fresh)), pa.int32()),
            "first_model_version": pa.array([model_version] * len(fresh), pa.int64()),
        },
        schema=spec.schema,
    )


def ensure_mapped(
    lake: Lake, spec: TableSpec, ids: Iterable[str], model_version: int, spark: "SparkSession | None" = None
) -> pa.Table:
    """(id, index) for every one of ``ids``, adding the unmapped ones to the table first
    (through a Delta MERGE on ``spark`` when given, else a delta-rs append)."""
    ids = {i for i in ids if i is not None}
    read_version = lake.version(spec)
    existing = lake.read_arrow(spec, read_version)
    added = new_rows(existing, ids, spec, model_version)
    if added.num_rows:
        app_id = f"idmap-{spec.name}"
        if spark is None:
            version = lake.append_arrow(spec, added, app_id=app_id, txn_version=model_version)
        else:
            version = lake.insert_new_spark(spec, spark.createDataFrame(added), app_id=app_id, txn_version=model_version)
        if version is None:
            raise RuntimeError(
                f"{spec.name}: model version {model_version} already added ids, yet {added.num_rows} "
                "are unmapped; another run is writing the mapping at the same time"
            )
        existing = lake.read_arrow(spec, version)  # with any commit another writer slipped in before ours
    id_col, index_col = columns(spec)
    mapping = existing.select([id_col, index_col])
    for col in (id_col, index_col):
        duplicated = len(mapping) - len(pc.unique(mapping.column(col)))
        if duplicated:
            raise RuntimeError(f"{spec.name} holds {duplicated} repeated {col} values; rebuild the mapping table")
    return mapping.filter(pc.is_in(mapping.column(id_col), pa.array(sorted(ids), pa.string())))
