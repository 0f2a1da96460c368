"""The model bundle: one model version as a folder of numpy arrays that serving memory-maps.

A bundle holds everything a server scores with (``ARRAYS``: factors, Gram matrices,
item-item weights, sorted id lookups, training interactions, popularity) and a
``meta.json``, written last, that marks it complete. The model's family (``meta["family"]``)
says which arrays score: an ALS model's factors, or an EASE model's item-item weights
(its factors are empty, of rank 0; an ALS model's weights are an empty matrix). Batch and serving share it through this module:

- the publish gate (``batch.gate``) writes a model's bundle into the lake at
  ``<lake>/_model_bundles/v<N>`` (``publish_model_bundle``) before it records the
  model as published, so servers map (or, from object storage, copy) finished arrays;
- maintenance (``batch.maintenance``) removes expired models' bundles
  (``remove_model_bundle``);
- serving opens a bundle (``serving.views.model``) and, for a model published without
  one, builds it in a loader process (``python -m lambdarec.model_bundle``, see
  ``main``) that it starts at idle CPU priority, so the Python objects and CPU a
  million-user model costs neither hold the serving process's GIL nor take CPU
  time that requests want.

No Spark is imported here: serving imports this module.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from scipy.sparse import csr_matrix

from lambdarec.confidence import Confidence
from lambdarec.id_index import IdIndex
from lambdarec.item_index import ITEM_INDEX, build_item_index
from lambdarec.lake import Lake
from lambdarec.popularity import item_popularity
from lambdarec.settings import Settings, canonical_als_params, canonical_engine
from schemas.tables import ITEM_FACTORS, ITEM_NEIGHBOURS, MODEL_INTERACTIONS, USER_FACTORS

FORMAT = 4  # bump when the bundle layout or what an array means changes; older bundles are rebuilt (4: item index)
META = "meta.json"
ARRAYS = (
    "item_ids",  # position -> item id (unicode array)
    "item_keys", "item_key_positions",  # IdIndex over item ids
    "user_keys", "user_key_positions",  # IdIndex over user ids
    "item_factors", "user_factors",  # Y (n_items x rank), X (n_users x rank), float32
    "yty", "xtx",  # Gram matrices, float64; XtX serves the symmetric fold-in of new items
    "item_norms",  # |y_i|, for cosine similarity
    "history_indptr", "history_items", "history_ratings",  # users' training ratings, CSR
    "popularity",  # per item: sum of training ratings
    "neighbour_indptr", "neighbour_items", "neighbour_weights",  # EASE's B by item position, CSR
)  # and, for an ALS model, the HNSW index over its item factors (``lambdarec.item_index``)
MODEL_BUNDLES = "_model_bundles"  # lake folder of the published models' bundles (not a Delta table)
LOAD_ERROR_EXIT = 3  # exit status of a loader that found the model inconsistent (message on stderr)

# Whether the regularisation (reg) is scaled by each row's interaction count (Spark ALS) or not (``implicit``).
RegScaling = Literal["per_interaction", "constant"]


def gram(factors: np.ndarray) -> np.ndarray:
    """YtY in float64, computed once per model."""
    y = np.asarray(factors, dtype=np.float64)
    return y.T @ y


def write_model_bundle(directory: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write a model bundle, ``meta.json`` last; the caller renames it into place when complete."""
    missing = set(ARRAYS) - set(arrays)
    if missing:
        raise ValueError(f"model arrays missing: {sorted(missing)}")
    directory.mkdir(parents=True, exist_ok=True)
    for name in ARRAYS:
        np.save(directory / f"{name}.npy", arrays[name], allow_pickle=False)
    if meta.get("family") == "als":
        build_item_index(arrays["item_factors"], directory / ITEM_INDEX)
    (directory / META).write_text(json.dumps({**meta, "format": FORMAT}))


def read_meta(directory: Path) -> dict[str, Any] | None:
    """The bundle's metadata, or None if it is absent, incomplete or from another format."""
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("format") == FORMAT else None


class ModelLoadError(RuntimeError):
    """The registry names a model whose tables are missing or inconsistent."""


def build_model_bundle(settings: Settings, row: dict[str, Any], directory: Path) -> float:
    """Write model ``row`` (a registry row) as a model bundle at ``directory``; returns seconds taken."""
    started = time.perf_counter()
    meta, arrays = model_arrays(Lake(settings), row, settings)
    write_model_bundle(directory, meta, arrays)
    return time.perf_counter() - started


def model_bundle_uri(settings: Settings, version: int) -> str:
    """Where the publish gate puts model ``version``'s bundle: beside the lake's tables."""
    return f"{settings.lake_root.rstrip('/')}/{MODEL_BUNDLES}/v{version}"


def local_path(uri: str) -> Path | None:
    """The local path of a lake URI, or None when it names remote storage."""
    if "://" not in uri:
        return Path(uri)
    return Path(uri.removeprefix("file://")) if uri.startswith("file://") else None


def publish_model_bundle(settings: Settings, row: dict[str, Any]) -> float:
    """Write the bundle of model ``row`` into the lake, replacing any earlier attempt; returns seconds.

    Local lakes get it by rename of a complete folder; object stores by copying
    the folder, whose meta.json (written last by ``write_model_bundle``) marks it complete.
    """
    started = time.perf_counter()
    uri = model_bundle_uri(settings, int(row["model_version"]))
    target = local_path(uri)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".building-", dir=target.parent if target else None) as scratch:
        bundle = Path(scratch) / "model"
        build_model_bundle(settings, row, bundle)
        if target is not None:
            shutil.rmtree(target, ignore_errors=True)
            bundle.rename(target)
        else:
            copy_model_bundle(bundle, uri)
    return time.perf_counter() - started


def model_bundle_exists(settings: Settings, version: int) -> bool:
    filesystem, path = _filesystem(model_bundle_uri(settings, version))
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def remove_model_bundle(settings: Settings, version: int) -> None:
    """Delete model ``version``'s published bundle, if any (servers' open maps stay valid)."""
    filesystem, path = _filesystem(model_bundle_uri(settings, version))
    if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        filesystem.delete_dir(path)


def _filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a URI or a local path."""
    text = str(location)
    return pafs.FileSystem.from_uri(text) if "://" in text else (pafs.LocalFileSystem(), text)


def copy_model_bundle(source: str | Path, destination: str | Path) -> None:
    """Copy a model bundle between filesystems (a URI or a local path each), meta.json last."""
    src_fs, src = _filesystem(source)
    dst_fs, dst = _filesystem(destination)
    dst_fs.create_dir(dst, recursive=True)
    names = sorted((info.base_name for info in src_fs.get_file_info(pafs.FileSelector(src))), key=lambda n: n == META)
    for name in names:
        pafs.copy_files(f"{src}/{name}", f"{dst}/{name}", source_filesystem=src_fs, destination_filesystem=dst_fs)


def model_arrays(lake: Lake, row: dict[str, Any], settings: Settings) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, arrays) of one model version, checked for consistency."""
    version = int(row["model_version"])
    only = pc.field("model_version") == version
    items = lake.read_arrow(ITEM_FACTORS, filter=only)
    users = lake.read_arrow(USER_FACTORS, filter=only)
    ratings = lake.read_arrow(MODEL_INTERACTIONS, filter=only)
    if items.num_rows == 0:
        raise ModelLoadError(f"model {version} has no item factors in {lake.uri(ITEM_FACTORS)}")
    # rows in index order; permuting numpy arrays, not the Arrow tables, keeps the loader's memory low
    item_order, user_order = _order(items["item_index"]), _order(users["user_index"])
    item_factors = _matrix(items, item_order, "item", version)
    user_factors = _matrix(users, user_order, "user", version) if users.num_rows else item_factors[:0]
    if user_factors.shape[1] != item_factors.shape[1]:
        raise ModelLoadError(f"model {version}: user and item factors have different ranks")
    item_pos = _index_lookup(items["item_index"].to_numpy()[item_order])
    user_pos = _index_lookup(users["user_index"].to_numpy()[user_order])
    history = csr_matrix(
        (
            ratings["rating"].to_numpy().astype(np.float64),
            (
                _positions(user_pos, ratings["user_index"].to_numpy(), "user", version),
                _positions(item_pos, ratings["item_index"].to_numpy(), "item", version),
            ),
        ),
        shape=(user_factors.shape[0], item_factors.shape[0]),
    )
    history.sum_duplicates()
    item_ids = _in_order(items["item_id"], item_order)
    item_index = _id_index(item_ids, "item", version)
    user_index = _id_index(_in_order(users["user_id"], user_order), "user", version)
    family, reg_param, confidence, reg_scaling = hyperparameters(row, settings)
    neighbours = _neighbours(lake, version, item_pos) if family == "ease" else csr_matrix((len(item_ids), len(item_ids)))
    meta = {
        "version": version,
        "source_events_version": int(row["source_events_version"]),
        "family": family,
        "reg_param": reg_param,
        "confidence": confidence.record(),
        "reg_scaling": reg_scaling,
        "lake": settings.lake_root,
    }
    arrays = {
        "item_ids": np.array(item_ids.to_pylist(), dtype=str),
        "item_keys": item_index.keys,
        "item_key_positions": item_index.positions,
        "user_keys": user_index.keys,
        "user_key_positions": user_index.positions,
        "item_factors": item_factors,
        "user_factors": user_factors,
        "yty": gram(item_factors),
        "xtx": gram(user_factors),
        "item_norms": np.linalg.norm(item_factors, axis=1),
        "history_indptr": history.indptr.astype(np.int64),
        "history_items": history.indices.astype(np.int64),
        "history_ratings": history.data,
        "popularity": item_popularity(history),
        "neighbour_indptr": neighbours.indptr.astype(np.int64),
        "neighbour_items": neighbours.indices.astype(np.int64),
        "neighbour_weights": neighbours.data.astype(np.float32),
    }
    return meta, arrays


def _neighbours(lake: Lake, version: int, item_pos: np.ndarray) -> csr_matrix:
    """An EASE model's weights as a CSR matrix over item positions."""
    rows = lake.read_arrow(ITEM_NEIGHBOURS, filter=pc.field("model_version") == version)
    if rows.num_rows == 0:
        raise ModelLoadError(f"model {version} is an EASE model without rows in {lake.uri(ITEM_NEIGHBOURS)}")
    neighbours, weights = rows["neighbours"].combine_chunks(), rows["weights"].combine_chunks()
    lengths = pc.list_value_length(neighbours).to_numpy(zero_copy_only=False)
    sources = np.repeat(rows["item_index"].to_numpy(), lengths)
    targets = pc.list_flatten(neighbours).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(weights).to_numpy(zero_copy_only=False).astype(np.float32)
    n = len(item_pos)
    matrix = csr_matrix(
        (values, (_positions(item_pos, sources, "item", version), _positions(item_pos, targets, "item", version))),
        shape=(n, n) if n else (0, 0),
    )
    matrix.sort_indices()
    return matrix


def hyperparameters(row: dict[str, Any], settings: Settings) -> tuple[str, float, Confidence, RegScaling]:
    """(family, reg, confidence, reg_scaling) the model was trained with: its registry params, else settings.

    A row without a ``family`` is an ALS model (rows written before EASE). ``params["reg_scaling"]``
    says whether reg was scaled by each row's interaction count (Spark ALS:
    "per_interaction") or not (the ``implicit`` library: "constant"); without it
    the registry's engine decides.
    """
    params = canonical_als_params(row.get("params") or {})
    family = params.get("family", "als")
    if family not in ("als", "ease"):
        raise ModelLoadError(f"model {row['model_version']}: unknown model family {family!r}")
    default_scaling = "constant" if canonical_engine(row.get("engine")) in ("implicit", "ease") else "per_interaction"
    scaling = params.get("reg_scaling", default_scaling)
    if scaling not in ("per_interaction", "constant"):
        raise ModelLoadError(f"model {row['model_version']}: unknown reg_scaling {scaling!r}")
    default = Confidence(settings.confidence_scaling, settings.als_alpha, settings.confidence_epsilon)
    try:
        confidence = Confidence.from_record(params, default)
    except ValueError as exc:
        raise ModelLoadError(f"model {row['model_version']}: {exc}") from exc
    return family, float(params.get("reg", settings.als_reg)), confidence, scaling


def _id_index(ids: pa.ChunkedArray, kind: str, version: int) -> IdIndex:
    try:
        return IdIndex.build(ids)
    except ValueError as exc:
        raise ModelLoadError(f"model {version}: {kind} ids: {exc}") from exc


def _order(index: pa.ChunkedArray) -> np.ndarray | slice:
    """The permutation that sorts ``index``; a plain slice when it is sorted already (no copy)."""
    values = index.to_numpy()
    return slice(None) if np.all(values[1:] > values[:-1]) else np.argsort(values, kind="stable")


def _in_order(column: pa.ChunkedArray, order: np.ndarray | slice) -> pa.ChunkedArray:
    return column if isinstance(order, slice) else column.take(order)


def _matrix(table: pa.Table, order: np.ndarray | slice, kind: str, version: int) -> np.ndarray:
    """The ``factors`` list column as a float32 matrix, rows permuted by ``order``."""
    factors = table["factors"].combine_chunks()
    lengths = pc.list_value_length(factors).to_numpy(zero_copy_only=False)
    if len(set(lengths.tolist())) != 1:
        raise ModelLoadError(f"model {version}: {kind} factor vectors have different lengths")
    values = pc.list_flatten(factors).to_numpy(zero_copy_only=False)
    return values.reshape(len(table), int(lengths[0]))[order].astype(np.float32, copy=False)


def _index_lookup(indexes: np.ndarray) -> np.ndarray:
    """Map a table's (possibly sparse) index column to row positions; -1 where absent."""
    lookup = np.full(int(indexes.max()) + 1 if len(indexes) else 0, -1, dtype=np.int64)
    lookup[indexes] = np.arange(len(indexes))
    return lookup


def _positions(lookup: np.ndarray, indexes: np.ndarray, kind: str, version: int) -> np.ndarray:
    if len(indexes) and (
        indexes.min() < 0 or indexes.max() >= len(lookup) or (lookup[indexes] < 0).any()
    ):
        raise ModelLoadError(f"model {version}: interactions name {kind}_index values that have no factors")
    return lookup[indexes]


def main(argv: list[str]) -> int:
    """``python -m lambdarec.model_bundle DIRECTORY`` with pickled ``(settings, row)`` on stdin."""
    settings, row = pickle.load(sys.stdin.buffer)
    try:
        seconds = build_model_bundle(settings, row, Path(argv[0]))
    except ModelLoadError as exc:
        print(exc, file=sys.stderr)
        return LOAD_ERROR_EXIT
    print(round(seconds, 3))
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except BaseException:  # reported here, since the exit below skips the interpreter's own report
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The bundle is complete and its files closed. Skipping the interpreter's teardown avoids a
    # native thread pool (Arrow's, under delta-rs and pyarrow) being destroyed while a worker is
    # alive, which aborts the process now and then ("terminate called without an active
    # exception", exit -6) after the work is done; CI saw it fail a model load.
    os._exit(code)
