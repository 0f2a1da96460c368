"""Contiguous copies of the item-factor rows that narrow filters pass, kept per model.

A filter that passes few of the items is ranked by scoring just those items, exactly
(``serving.views.catalogue``). Gathering their rows from the memory-mapped factors was the
largest single cost of such a request (README: measurements), and the same filters
come back request after request. So a filter's rows are copied once into one
contiguous block and reused. The copies are bounded in bytes, dropped least recently
used first, and found by the positions themselves (compared in full), so a block
can never be another filter's: the model's factors never change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

BUDGET_BYTES = 64 << 20  # per model and serving process: ten 10%-filters of a 100k x 64 model take 26 MB
GATHER_CHUNK = 1024  # rows gathered between two pauses of a swap: a short stretch of work


class FactorBlocks:
    """``rows(positions)``: ``factors[positions]``, from a cached block when asked for before."""

    def __init__(self, factors: np.ndarray, budget_bytes: int = BUDGET_BYTES):
        self._factors = factors
        self._budget = budget_bytes
        self._blocks: OrderedDict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def rows(self, positions: np.ndarray, pause: Callable[[], object] | None = None) -> np.ndarray:
        """The factor rows at ``positions`` (int64); the result is shared: never write to it. With
        ``pause``, a block not cached yet is gathered in chunks with ``pause()`` between them."""
        if not len(positions):
            return np.take(self._factors, positions, axis=0)
        key = (len(positions), int(positions[0]), int(positions[-1]), int(positions.sum()))
        with self._lock:
            found = self._blocks.get(key)
            if found is not None and (found[0] is positions or np.array_equal(found[0], positions)):
                self._blocks.move_to_end(key)
                return found[1]
        block = self._gather(positions, pause)
        size = positions.nbytes + block.nbytes
        if size <= self._budget:
            with self._lock:
                replaced = self._blocks.pop(key, None)
                self._bytes -= 0 if replaced is None else replaced[0].nbytes + replaced[1].nbytes
                while self._blocks and self._bytes + size > self._budget:
                    _, (old_positions, old_block) = self._blocks.popitem(last=False)
                    self._bytes -= old_positions.nbytes + old_block.nbytes
                kept = positions if not positions.flags.writeable else positions.copy()  # read-only: a cached array
                self._blocks[key] = (kept, block)
                self._bytes += size
        return block

    def _gather(self, positions: np.ndarray, pause: Callable[[], object] | None) -> np.ndarray:
        if pause is None:
            return np.take(self._factors, positions, axis=0)
        block = np.empty((len(positions), self._factors.shape[1]), dtype=self._factors.dtype)
        for start in range(0, len(positions), GATHER_CHUNK):
            pause()
            end = start + GATHER_CHUNK
            np.take(self._factors, positions[start:end], axis=0, out=block[start:end])
        return block

    def cached_positions(self) -> list[np.ndarray]:
        """The positions of every cached block, least recently used first."""
        with self._lock:
            return [positions for positions, _ in self._blocks.values()]

    @property
    def cached_bytes(self) -> int:
        return self._bytes
