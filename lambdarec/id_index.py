"""Id -> row position over a sorted fixed-width byte array.

A dict over a million user ids is a million Python objects; building one holds
the GIL in long stretches and stalls every request served beside a model swap.
This index is two numpy arrays: the loader process builds them, the server
memory-maps them, and a lookup is one binary search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa


class IdIndex:
    """Read-only mapping from an id to its position; ``keys`` sorted, ``positions[i]`` belongs to ``keys[i]``."""

    def __init__(self, keys: np.ndarray, positions: np.ndarray):
        self.keys = keys
        self.positions = positions

    @classmethod
    def build(cls, ids: Sequence[str] | pa.Array | pa.ChunkedArray) -> IdIndex:
        """Index ``ids`` by their position in the sequence; duplicate ids are refused.

        Works on Arrow's buffers directly: no Python object per id.
        """
        column = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(ids, pa.string())
        keys = _fixed_width(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        repeated = np.flatnonzero(keys[1:] == keys[:-1])
        if len(repeated):
            raise ValueError(f"duplicate id {keys[repeated[0]].decode()!r}")
        return cls(keys, order.astype(np.int64))

    def get(self, key: str, default: int | None = None) -> int | None:
        """One id's position: a scalar binary search, several times cheaper than ``lookup`` of one id."""
        wanted = _encode(key)
        if not wanted or not len(self.keys):
            return default
        at = int(self.keys.searchsorted(wanted))
        return int(self.positions[at]) if at < len(self.keys) and self.keys[at] == wanted else default

    def lookup(self, keys: Iterable[str] | np.ndarray) -> np.ndarray:
        """Positions of ``keys`` (vectorised), -1 where absent; ``keys`` may be ``encode``'s array."""
        wanted = keys if isinstance(keys, np.ndarray) else encode(keys)
        if len(wanted) == 0 or len(self.keys) == 0:
            return np.full(len(wanted), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        return np.where(self.keys[at] == wanted, self.positions[at], -1)

    def __getitem__(self, key: str) -> int:
        position = self.get(key)
        if position is None:
            raise KeyError(key)
        return position

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        return len(self.keys)


def _fixed_width(ids: pa.Array) -> np.ndarray:
    """A string array as a NUL-padded fixed-width byte array."""
    if ids.null_count:
        raise ValueError("ids must not be null")
    n = len(ids)
    ids = ids.cast(pa.large_binary())
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset : ids.offset + n + 1]
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8) if n else np.empty(0, dtype=np.uint8)
    lengths = np.diff(offsets)
    width = max(int(lengths.max(initial=0)), 1)
    if n and lengths.min() == 0:
        raise ValueError("ids must not be empty")
    if np.any(data[offsets[1:] - 1] == 0):
        raise ValueError("ids must not end in a NUL character")
    if n and (lengths == width).all():  # e.g. pseudonyms: the bytes already are the array
        return data[offsets[0] : offsets[-1]].view(f"S{width}").copy()
    columns = np.arange(width)
    inside = columns < lengths[:, None]
    padded = np.zeros((n, width), dtype=np.uint8)
    padded[inside] = data[(offsets[:-1, None] + columns)[inside]]
    return padded.view(f"S{width}").ravel()


def encode(keys: Iterable[str]) -> np.ndarray:
    """Ids as a fixed-width byte array for ``lookup``. The array would strip a trailing NUL, so such
    an id could match a shorter one: it becomes the empty key instead, which no index holds."""
    encoded = [_encode(k) for k in keys]
    return np.array(encoded, dtype="S" if encoded else "S1")


def _encode(key: str) -> bytes:
    """``key``'s bytes, or the empty key (which no index holds) for one ending in NUL."""
    encoded = key.encode("utf-8")
    return b"" if encoded.endswith(b"\0") else encoded
