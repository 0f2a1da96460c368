"""The batch view: the published ALS model, loaded from the lake into numpy.

A new version is loaded beside the serving one and swapped in with a single
reference assignment, so a request sees either the old model or the new one,
never a mix. A failed load keeps the old model.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import csr_matrix

from batch.registry import latest_published
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import ITEM_FACTORS, MODEL_INTERACTIONS, USER_FACTORS
from serving.foldin import RegScaling, gram

log = logging.getLogger(__name__)
LOAD_SLICE = 20_000  # rows converted to Python objects between two GIL releases while loading


class ModelLoadError(RuntimeError):
    """The registry names a model whose tables are missing or inconsistent."""


@dataclass(frozen=True)
class Model:
    """One published model version, ready to score. Positions index the matrices' rows."""

    version: int
    source_events_version: int
    reg_param: float
    alpha: float
    reg_scaling: RegScaling
    item_ids: np.ndarray  # position -> item id (object array)
    item_positions: dict[str, int]
    user_positions: dict[str, int]
    item_factors: np.ndarray  # Y, n_items x rank
    user_factors: np.ndarray  # X, n_users x rank
    yty: np.ndarray
    xtx: np.ndarray  # XtX: the symmetric fold-in of new items solves against it
    item_norms: np.ndarray  # |y_i|, for cosine similarity
    interactions: csr_matrix  # users x items, training ratings
    popularity: np.ndarray  # per item: sum of training ratings
    loaded_at: float

    def history(self, user_position: int) -> tuple[np.ndarray, np.ndarray]:
        """The user's training items (positions) and ratings."""
        start, end = self.interactions.indptr[user_position : user_position + 2]
        return self.interactions.indices[start:end], self.interactions.data[start:end]


def load_model(lake: Lake, row: dict[str, Any], settings: Settings) -> Model:
    """Read one model version's factor and interaction tables into a ``Model``."""
    version = int(row["model_version"])
    only = pc.field("model_version") == version
    items = lake.read_arrow(ITEM_FACTORS, filter=only).sort_by("item_index")
    users = lake.read_arrow(USER_FACTORS, filter=only).sort_by("user_index")
    ratings = lake.read_arrow(MODEL_INTERACTIONS, filter=only)
    if items.num_rows == 0:
        raise ModelLoadError(f"model {version} has no item factors in {lake.uri(ITEM_FACTORS)}")
    item_factors = _matrix(items, "item", version)
    user_factors = _matrix(users, "user", version) if users.num_rows else item_factors[:0]
    if user_factors.shape[1] != item_factors.shape[1]:
        raise ModelLoadError(f"model {version}: user and item factors have different ranks")
    item_pos = _index_lookup(items["item_index"].to_numpy())
    user_pos = _index_lookup(users["user_index"].to_numpy())
    rows = _positions(user_pos, ratings["user_index"].to_numpy(), "user", version)
    cols = _positions(item_pos, ratings["item_index"].to_numpy(), "item", version)
    interactions = csr_matrix(
        (ratings["rating"].to_numpy().astype(np.float64), (rows, cols)),
        shape=(user_factors.shape[0], item_factors.shape[0]),
    )
    interactions.sum_duplicates()
    reg_param, alpha, reg_scaling = hyperparameters(row, settings)
    item_ids = np.asarray(_ids(items["item_id"]), dtype=object)
    return Model(
        version=version,
        source_events_version=int(row["source_events_version"]),
        reg_param=reg_param,
        alpha=alpha,
        reg_scaling=reg_scaling,
        item_ids=item_ids,
        item_positions=_positions_of(item_ids),
        user_positions=_positions_of(_ids(users["user_id"])),
        item_factors=item_factors,
        user_factors=user_factors,
        yty=gram(item_factors),
        xtx=gram(user_factors),
        item_norms=np.linalg.norm(item_factors, axis=1),
        interactions=interactions,
        popularity=np.asarray(interactions.sum(axis=0)).ravel(),
        loaded_at=time.time(),
    )


def hyperparameters(row: dict[str, Any], settings: Settings) -> tuple[float, float, RegScaling]:
    """(regParam, alpha, reg_scaling) the model was trained with: its registry params, else settings.

    ``params["reg_scaling"]`` says whether regParam was scaled by each row's
    interaction count (Spark ALS: "per_interaction") or not (the ``implicit``
    library: "constant"); without it the registry's engine decides.
    """
    params = row.get("params") or {}
    default_scaling = "constant" if str(row.get("engine") or "").startswith("implicit") else "per_interaction"
    scaling = params.get("reg_scaling", default_scaling)
    if scaling not in ("per_interaction", "constant"):
        raise ModelLoadError(f"model {row['model_version']}: unknown reg_scaling {scaling!r}")
    reg, alpha = float(params.get("regParam", settings.als_reg)), float(params.get("alpha", settings.als_alpha))
    return reg, alpha, scaling


def _ids(column: pa.ChunkedArray) -> list[str]:
    """A string column as a list, converted in slices so requests get the GIL in between."""
    out: list[str] = []
    for start in range(0, len(column), LOAD_SLICE):
        out.extend(column.slice(start, LOAD_SLICE).to_pylist())
        time.sleep(0)  # yield the GIL: a swap must not stall the requests it runs beside
    return out


def _positions_of(ids) -> dict[str, int]:
    positions: dict[str, int] = {}
    for start in range(0, len(ids), LOAD_SLICE):
        positions.update(zip(ids[start : start + LOAD_SLICE], range(start, start + LOAD_SLICE)))
        time.sleep(0)
    return positions


def _matrix(table: pa.Table, kind: str, version: int) -> np.ndarray:
    factors = table["factors"].combine_chunks()
    lengths = pc.list_value_length(factors).to_numpy(zero_copy_only=False)
    if len(set(lengths.tolist())) != 1:
        raise ModelLoadError(f"model {version}: {kind} factor vectors have different lengths")
    values = factors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(table), int(lengths[0]))


def _index_lookup(indexes: np.ndarray) -> np.ndarray:
    """Map a table's (possibly sparse) index column to row positions; -1 where absent."""
    lookup = np.full(int(indexes.max()) + 1 if len(indexes) else 0, -1, dtype=np.int64)
    lookup[indexes] = np.arange(len(indexes))
    return lookup


def _positions(lookup: np.ndarray, indexes: np.ndarray, kind: str, version: int) -> np.ndarray:
    if len(indexes) and (
        indexes.min() < 0 or indexes.max() >= len(lookup) or (lookup[indexes] < 0).any()
    ):
        raise ModelLoadError(f"model {version}: interactions name a {kind}_index with no factors")
    return lookup[indexes]


class ModelStore:
    """Holds the serving model and keeps it in step with the registry."""

    def __init__(self, settings: Settings, lake: Lake | None = None):
        self.settings = settings
        self.lake = lake or Lake(settings)
        self.current: Model | None = None
        self.last_error: str | None = None
        self.last_checked_at: float | None = None
        self._reload_lock = threading.Lock()

    def reload(self) -> bool:
        """Load the published model if it differs from the serving one; True if swapped."""
        with self._reload_lock:
            try:
                row = latest_published(self.lake)
            except Exception as exc:
                self.last_error = f"registry read failed: {exc}"
                raise
            self.last_checked_at = time.time()
            serving = self.current
            if row is None or (serving is not None and serving.version == int(row["model_version"])):
                return False
            try:
                model = load_model(self.lake, row, self.settings)
            except Exception as exc:
                self.last_error = f"loading model {row['model_version']} failed: {exc}"
                raise
            self.current = model
            self.last_error = None
            log.info(
                "model loaded",
                extra={
                    "model_version": model.version,
                    "source_events_version": model.source_events_version,
                    "n_users": len(model.user_positions),
                    "n_items": len(model.item_ids),
                    "previous_version": serving.version if serving else None,
                },
            )
            return True
