"""Rate limits per caller: token buckets in one fixed-size table that every worker of a serving run shares.

A caller is its API key (``request.state.key_id``, set by ``serving.api.security`` on an
authenticated request) or, in open mode, its address. Each limited route kind (events,
consent changes) has its own rate and burst and its own bucket per caller.

The table is a memory-mapped file in the serving run's folder (``serving.workers``),
guarded by a file lock, so a caller draws from one bucket whichever worker takes its
request: N workers do not give it N times the rate. One process on its own keeps the
table in anonymous memory. The table has a fixed number of slots whatever the number
of callers: a set-associative layout where a new caller takes the least recently used
slot of its set (a slot untouched for burst / rate seconds is full again, so evicting it
forgets nothing). Slots are found by a keyed hash (BLAKE2b, a random key per table), so
callers cannot aim their names at someone else's slot.

A request costs one token per event (or consent change); it is let through while the bucket
holds the cost (or a full bucket for a cost above the burst, which then runs into debt) and
refused whole otherwise, with the seconds until it would fit. Bucket times are CLOCK_MONOTONIC,
one clock for every process of the host; a worker killed while it holds the file lock
releases it with its death.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import secrets
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from starlette.requests import Request

TABLE_ENV = "LAMBDAREC_SERVE_RATE_TABLE"
"""The shared table's file, which ``run_workers`` creates and names to its workers."""
MAGIC = b"LRRATE01"
HEADER = struct.Struct("<8sII16s")  # magic, slots, ways, hash key
HEADER_BYTES = 64
SLOT = struct.Struct("<QQdd")  # caller digest (two halves; 0, 0 = free), tokens, last update (monotonic s)
WAYS = 8  # slots a caller's digest may occupy: its set


class BucketTable:
    """A fixed number of token buckets in a byte buffer; ``take`` is safe across threads and, with a
    ``lock_file``, across processes."""

    def __init__(self, buffer: mmap.mmap, lock_file: int | None):
        magic, self.slots, self.ways, hash_key = HEADER.unpack_from(buffer, 0)
        if magic != MAGIC:
            raise ValueError("not a rate-limit table")
        self._hasher = hashlib.blake2b(digest_size=16, key=hash_key)
        self._buffer = buffer
        self._lock = _TableLock(threading.Lock(), lock_file)
        self._sets = self.slots // self.ways
        self._set = struct.Struct("<" + "QQdd" * self.ways)

    @classmethod
    def in_memory(cls, slots: int) -> BucketTable:
        """A table of this process's own."""
        buffer = mmap.mmap(-1, _table_bytes(slots))
        _write_header(buffer, slots)
        return cls(buffer, lock_file=None)

    @classmethod
    def create(cls, path: Path, slots: int) -> None:
        """Write an empty table to ``path`` for the workers to ``open``."""
        with path.open("w+b") as out:
            out.truncate(_table_bytes(slots))
            with mmap.mmap(out.fileno(), 0) as buffer:
                _write_header(buffer, slots)

    @classmethod
    def open(cls, path: Path) -> BucketTable:
        descriptor = os.open(path, os.O_RDWR)
        return cls(mmap.mmap(descriptor, 0), lock_file=descriptor)

    def take(self, caller: str, cost: int, rate_per_s: float, burst: int, now: float | None = None) -> float | None:
        """Draw ``cost`` tokens from ``caller``'s bucket: None if granted, else the seconds to wait."""
        hasher = self._hasher.copy()
        hasher.update(caller.encode())
        high, low = struct.unpack("<QQ", hasher.digest())
        low |= 1  # never the free slot's 0, 0
        base = HEADER_BYTES + (high % self._sets) * self.ways * SLOT.size
        needed = min(cost, burst)
        with self._lock:
            now = time.monotonic() if now is None else now
            fields = self._set.unpack_from(self._buffer, base)
            way = self._find(fields, high, low)
            if way is None:
                way = min(range(self.ways), key=lambda w: fields[w * 4 + 3])  # free slots have time 0
                tokens = float(burst)
            else:
                tokens = min(float(burst), fields[way * 4 + 2] + (now - fields[way * 4 + 3]) * rate_per_s)
            granted = tokens >= needed
            if granted:
                tokens -= cost
            SLOT.pack_into(self._buffer, base + way * SLOT.size, high, low, tokens, now)
        return None if granted else (needed - tokens) / rate_per_s

    def _find(self, fields: tuple, high: int, low: int) -> int | None:
        for way in range(self.ways):
            if fields[way * 4] == high and fields[way * 4 + 1] == low:
                return way
        return None


class _TableLock:
    """This process's threads, then the other processes, one at a time (a file lock excludes other
    processes, not this one's threads)."""

    def __init__(self, thread_lock: threading.Lock, lock_file: int | None):
        self._thread_lock = thread_lock
        self._lock_file = lock_file

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._thread_lock.release()


def _table_bytes(slots: int) -> int:
    return HEADER_BYTES + slots * SLOT.size


def _write_header(buffer: mmap.mmap, slots: int) -> None:
    if slots < WAYS or slots % WAYS:
        raise ValueError(f"a rate-limit table has a multiple of {WAYS} slots, not {slots}")
    HEADER.pack_into(buffer, 0, MAGIC, slots, WAYS, secrets.token_bytes(16))


def shared_table(slots: int) -> BucketTable:
    """The table the serving run's workers share, or one of this process's own when it serves alone."""
    path = os.environ.get(TABLE_ENV)
    return BucketTable.open(Path(path)) if path else BucketTable.in_memory(slots)


class RateLimiter:
    """One route kind's limit: ``rate_per_s`` tokens a second per caller, ``burst`` at once; 0 = no limit."""

    def __init__(self, table: BucketTable, kind: str, rate_per_s: float, burst: int, unit: str):
        self.table = table
        self.kind = kind
        self.rate = rate_per_s
        self.burst = burst
        self.unit = unit

    def take(self, caller: str, cost: int) -> float | None:
        """None if ``caller`` may spend ``cost`` now, else the seconds to wait."""
        if self.rate <= 0:
            return None
        return self.table.take(f"{self.kind}\0{caller}", cost, self.rate, self.burst)

    def refusal(self, wait_s: float) -> JSONResponse:
        """The 429 a refused request gets."""
        detail = f"over the rate limit of {self.rate:g} {self.unit}/s per caller; retry after Retry-After seconds"
        return JSONResponse({"detail": detail}, status_code=429, headers={"Retry-After": retry_after_header(wait_s)})


def caller(request: Request) -> str:
    """Whose bucket a request draws from: its API key's, or its address's in open mode."""
    key_id = getattr(request.state, "key_id", None)
    if key_id is not None:
        return f"key:{key_id}"
    return f"address:{request.client.host if request.client else 'unknown'}"


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
