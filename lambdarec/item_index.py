"""An approximate nearest-neighbour index over an ALS model's item factors (HNSW, inner product).

Built once per model, when its bundle is written (``lambdarec.model_bundle``), and
shipped in the bundle, so it is swapped with the model. Serving asks it for a
candidate pool, scores the pool exactly, and falls back to exact scoring over every
item when filters, exclusions and seen items leave too few (``serving.views.catalogue``).

faiss-cpu's HNSW was chosen by measurement over hnswlib and usearch (docs/measurements.md):
hnswlib answered a query fastest, but its load holds the GIL for the whole read, which
stalled every request during a model swap; faiss reads the index without holding it, and
maps the file (vectors and graph) rather than copying it, so every serving process on a
host shares one copy and a swap's load is a few milliseconds of CPU.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

ITEM_INDEX = "item_index.faiss"  # the index's file in a model bundle
LINKS = 32  # HNSW's M: neighbours per node; 16 lost recall on 64-factor models
EF_CONSTRUCTION = 200  # candidate list while building: better graphs, slower builds


def build_item_index(item_factors: np.ndarray, path: Path) -> None:
    """Write the HNSW index of ``item_factors`` (labels are item positions) to ``path``."""
    factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    index = faiss.IndexHNSWFlat(factors.shape[1], LINKS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(factors)
    faiss.write_index(index, str(path))


class ItemIndex:
    """A loaded index: ``candidates(vector, count)`` are item positions, best (approximately) first."""

    def __init__(self, path: Path, ef: int):
        """``ef`` is the search's candidate list; a query for more than ``ef`` items searches with its count."""
        # one thread: a single query is too small to split, and idle OpenMP workers spinning on
        # a small host slow every request (as OpenBLAS's did, serving/workers.py)
        faiss.omp_set_num_threads(1)
        self._index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)  # mapped, not copied
        self.path = path
        self.ef = ef
        self.size = int(self._index.ntotal)

    def candidates(self, vector: np.ndarray, count: int) -> np.ndarray:
        count = min(count, self.size)
        if count <= 0:
            return np.empty(0, dtype=np.int64)
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        # per query, so concurrent searches never race on the index's own efSearch
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef, count))  # type: ignore[attr-defined]  # SWIG, not in faiss's stubs
        _, labels = self._index.search(query, count, params=params)
        found = labels[0]
        return found[found >= 0].astype(np.int64)  # -1: the graph had fewer reachable items than asked
