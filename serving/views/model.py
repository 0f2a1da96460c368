"""The batch view in memory: one published model version, opened from its model bundle.

The bundle (``lambdarec.model_bundle``) is a folder of numpy arrays that the publish
gate or a loader process writes; the server opens it with memory maps. Opening is a
few file opens and no per-user Python objects, so a swap under load neither holds
the GIL nor doubles the server's heap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scipy.sparse import csr_matrix

from lambdarec.confidence import Confidence
from lambdarec.id_index import IdIndex
from lambdarec.item_index import ITEM_INDEX, ItemIndex
from lambdarec.model_bundle import ARRAYS, FORMAT, RegScaling, read_meta
from serving.views.factor_blocks import FactorBlocks

TOUCH_CHUNK_BYTES = 2 << 20  # pages read between two pauses of a swap: a short stretch of work


@dataclass(frozen=True)
class Model:
    """One published model version, ready to score. Positions index the matrices' rows."""

    version: int
    source_events_version: int
    family: str  # "als" scores with factors, "ease" with neighbours
    reg_param: float
    confidence: Confidence
    reg_scaling: RegScaling
    item_ids: np.ndarray
    item_positions: IdIndex
    user_positions: IdIndex
    item_factors: np.ndarray
    user_factors: np.ndarray
    yty: np.ndarray
    xtx: np.ndarray
    item_norms: np.ndarray
    history_indptr: np.ndarray
    history_items: np.ndarray
    history_ratings: np.ndarray
    popularity: np.ndarray
    neighbours: csr_matrix  # EASE's B over item positions (empty for ALS); rows score columns
    directory: Path
    loaded_at: float = field(compare=False)
    factor_blocks: FactorBlocks = field(compare=False)  # narrow filters' rows of item_factors, contiguous
    item_index: ItemIndex | None = field(default=None, compare=False)  # ALS only, when serving searches approximately

    def touch(self, pause: Callable[[], object] = lambda: None) -> None:
        """Read the arrays every request scores against, so the first requests after a swap
        find them in memory instead of faulting them in from the page cache; ``pause()`` runs
        between chunks (see ``serving.idle_gate``)."""
        weights = (self.neighbours.indptr, self.neighbours.indices, self.neighbours.data)
        # the index's file is mapped by faiss; reading it through a map of our own brings its pages in
        index = () if self.item_index is None else (np.memmap(self.item_index.path, dtype=np.uint8, mode="r"),)
        for array in (self.item_factors, self.item_norms, self.popularity, self.item_ids, self.item_positions.keys,
                      *weights, *index):
            flat = array.reshape(-1).view(np.uint8)
            for start in range(0, len(flat), TOUCH_CHUNK_BYTES):
                pause()
                flat[start : start + TOUCH_CHUNK_BYTES].max(initial=0)  # reads every page of the chunk

    def carry_blocks(self, serving: Model, pause: Callable[[], object] = lambda: None) -> None:
        """Copy into this model's factor blocks the rows of the items of every block the serving
        model holds, at this model's positions: the first request of each narrow filter after a
        swap then finds its rows ready instead of gathering them while other requests queue
        (README: measurements). ``pause()`` runs between chunks of rows (see ``serving.idle_gate``)."""
        keys = serving.item_positions.keys
        keys_by_position = np.empty(len(serving.item_ids), dtype=keys.dtype)
        keys_by_position[serving.item_positions.positions] = keys
        for positions in serving.factor_blocks.cached_positions():
            pause()
            found = self.item_positions.lookup(keys_by_position[positions])
            self.factor_blocks.rows(np.sort(found[found >= 0]), pause)

    def history(self, user_position: int) -> tuple[np.ndarray, np.ndarray]:
        """The user's training items (positions) and ratings."""
        start, end = self.history_indptr[user_position : user_position + 2]
        return self.history_items[start:end], self.history_ratings[start:end]


def open_model(directory: Path, loaded_at: float, pause: Callable[[], object] = lambda: None, ann_ef: int = 0) -> Model:
    """Memory-map a complete model bundle; ``pause()`` runs between arrays. With ``ann_ef`` an ALS
    model's item index is loaded too, searching with that candidate list (``serve_ann_ef``)."""
    meta = read_meta(directory)
    if meta is None:
        raise FileNotFoundError(f"no model bundle of format {FORMAT} at {directory}")
    a = {}
    for name in ARRAYS:
        pause()
        # np.asarray drops the memmap subclass (no copy), keeping per-request numpy calls plain
        a[name] = np.asarray(np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False))
    n_items = len(a["item_ids"])
    pause()
    index = ItemIndex(directory / ITEM_INDEX, ann_ef) if ann_ef and meta["family"] == "als" else None
    return Model(
        version=int(meta["version"]),
        source_events_version=int(meta["source_events_version"]),
        family=str(meta["family"]),
        reg_param=float(meta["reg_param"]),
        confidence=Confidence(**meta["confidence"]),
        reg_scaling=meta["reg_scaling"],
        item_ids=a["item_ids"],
        item_positions=IdIndex(a["item_keys"], a["item_key_positions"]),
        user_positions=IdIndex(a["user_keys"], a["user_key_positions"]),
        item_factors=a["item_factors"],
        user_factors=a["user_factors"],
        yty=a["yty"],
        xtx=a["xtx"],
        item_norms=a["item_norms"],
        history_indptr=a["history_indptr"],
        history_items=a["history_items"],
        history_ratings=a["history_ratings"],
        popularity=a["popularity"],
        neighbours=csr_matrix(
            (a["neighbour_weights"], a["neighbour_items"], a["neighbour_indptr"]), shape=(n_items, n_items), copy=False
        ),
        directory=directory,
        loaded_at=loaded_at,
        factor_blocks=FactorBlocks(a["item_factors"]),
        item_index=index,
    )
