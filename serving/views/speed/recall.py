"""Reading an evicted user's interactions back from the lake before their request is answered.

The speed view's cap evicts the least recently active users (``serving.views.speed.view``); one
whose interactions no model covers yet is remembered. Their next recommendation request
reads their rows of ``speed_user_interactions`` (within the view's horizon) back into
the view first, off the event loop: one reader thread scans the table once for every
user waiting at that moment, and the request waits at most ``serve_recall_timeout_s``.
Past that the answer goes without those rows (counted ``late``) and the read still
completes, for the user's next request. A failed read (counted ``failed``) leaves the
user remembered, so the next request tries again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lambdarec.lake import Lake
from schemas.speed_updates import KIND_USER_INTERACTIONS, row
from schemas.tables import SPEED_USER_INTERACTIONS
from serving.views.speed.view import SpeedView

log = logging.getLogger(__name__)

RESTORED, LATE, FAILED = "restored", "late", "failed"  # a read-back's outcome for the request that waited
READ_BATCH = 1000  # users one scan reads back at most


class UserRecall:
    """Reads evicted users' interactions back into ``view`` from ``lake``, one scan per waiting batch."""

    def __init__(self, lake: Lake, view: SpeedView, timeout_s: float,
                 on_outcome: Callable[[str], None] | None = None):
        self.lake = lake
        self.view = view
        self.timeout_s = timeout_s
        self.on_outcome = on_outcome
        self._lock = threading.Lock()
        self._pending: dict[str, Future[int | None]] = {}
        self._reading = False
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambdarec-recall")

    async def ensure(self, user_id: str, covered_version: int | None) -> None:
        """Before answering ``user_id``: if the view evicted interactions of theirs that a model trained
        on events up to ``covered_version`` (None: no model) lacks, wait (bounded) for them to be read back."""
        if not self.view.needs_recall(user_id, covered_version):
            return
        read = asyncio.wrap_future(self._request(user_id))
        try:
            restored = await asyncio.wait_for(asyncio.shield(read), self.timeout_s)
        except TimeoutError:
            outcome = LATE
        else:
            outcome = RESTORED if restored is not None else FAILED
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def close(self) -> None:
        self._reader.shutdown(wait=False, cancel_futures=True)

    def _request(self, user_id: str) -> Future[int | None]:
        """The read that will bring ``user_id`` back: one already waiting, or a new one."""
        with self._lock:
            future = self._pending.get(user_id)
            if future is None:
                future = self._pending[user_id] = Future()
                if not self._reading:
                    self._reading = True
                    self._reader.submit(self._read_waiting)
        return future

    def _read_waiting(self) -> None:
        """Read back every user waiting, a batch per scan, until none is; each future gets the count
        restored (None: the read failed)."""
        while True:
            with self._lock:
                users = list(itertools.islice(self._pending, READ_BATCH))  # the longest waiting
                batch = {user: self._pending.pop(user) for user in users}
                if not batch:
                    self._reading = False
                    return
            try:
                found = self.read(list(batch))
            except Exception:  # the users stay remembered: their next request tries again
                log.exception("reading evicted users back from the lake failed", extra={"users": len(batch)})
                for future in batch.values():
                    future.set_result(None)
                continue
            for user, future in batch.items():
                future.set_result(self.view.restore(user, found.get(user, [])))

    def read(self, users: list[str]) -> dict[str, list[dict[str, Any]]]:
        """``users``' rows of ``speed_user_interactions`` within the view's horizon, in message form."""
        condition = pc.field("user_id").isin(users)
        cutoff = self.view.recall_cutoff()
        if cutoff is not None:
            since = pa.scalar(dt.datetime.fromisoformat(cutoff), SPEED_USER_INTERACTIONS.schema.field("occurred_at").type)
            condition &= pc.field("occurred_at") >= since
        table = self.lake.read_arrow(SPEED_USER_INTERACTIONS, filter=condition)
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for values in table.to_pylist():
            found[values["user_id"]].append(row(KIND_USER_INTERACTIONS, values))
        return found

