"""An approximate nearest-neighbour index over an ALS model's item factors (HNSW, inner product).

Built once per model, when its bundle is written (``lambdarec.model_bundle``), and
shipped in the bundle, so it is swapped with the model. Serving asks it for a
candidate pool, scores the pool exactly, and falls back to exact scoring over every
item when filters, exclusions and seen items leave too few (``serving.ranking``).

hnswlib was chosen by measurement over faiss-cpu and usearch (README: measurements):
at the same recall@10 it answered a single 64-factor query fastest.
"""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np

ITEM_INDEX = "item_index.hnsw"  # the index's file in a model bundle
LINKS = 32  # HNSW's M: neighbours per node; 16 lost recall on 64-factor models
EF_CONSTRUCTION = 200  # candidate list while building: better graphs, slower builds


def build_item_index(item_factors: np.ndarray, path: Path) -> None:
    """Write the HNSW index of ``item_factors`` (labels are item positions) to ``path``."""
    factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    index = hnswlib.Index(space="ip", dim=factors.shape[1])
    index.init_index(max_elements=max(len(factors), 1), ef_construction=EF_CONSTRUCTION, M=LINKS)
    if len(factors):
        index.add_items(factors, np.arange(len(factors)))
    index.save_index(str(path))


class ItemIndex:
    """A loaded index: ``candidates(vector, count)`` are item positions, best (approximately) first."""

    def __init__(self, path: Path, rank: int, n_items: int, ef: int):
        """``ef`` is the search's candidate list; a query for more than ``ef`` items searches with its count."""
        self._index = hnswlib.Index(space="ip", dim=rank)
        self._index.load_index(str(path), max_elements=max(n_items, 1))
        self._index.set_ef(ef)  # once: ef is the index's, not a query's, so concurrent queries never race on it
        self._index.set_num_threads(1)
        self.size = n_items

    def candidates(self, vector: np.ndarray, count: int) -> np.ndarray:
        count = min(count, self.size)
        if count <= 0:
            return np.empty(0, dtype=np.int64)
        labels, _distances = self._index.knn_query(np.asarray(vector, dtype=np.float32), k=count)
        return labels[0].astype(np.int64)
