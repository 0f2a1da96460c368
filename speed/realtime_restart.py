"""Restarting the real-time query when it fails, without stopping the job.

The real-time query is the fast path only: it keeps no state, restarts from its
checkpoint and serving drops repeated event ids, while the events query lands
every event exactly once whatever the fast path does. So a failure of the
real-time query (a Kafka write that failed, a task lost) is logged with its
error, counted in ``lambdarec_speed_query_restarts_total`` and the query started
again after a backoff; a failure of any other query still stops the job, for its
supervisor to restart.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

from lambdarec.restart_policy import RestartPolicy
from speed.metrics import METRICS

log = logging.getLogger("lambdarec.speed")

POLICY = RestartPolicy(base_s=1.0, max_s=60.0, stable_s=300.0)


class Query(Protocol):
    """What of a ``StreamingQuery`` this needs."""

    @property
    def name(self) -> str: ...

    @property
    def isActive(self) -> bool: ...  # noqa: N802 - pyspark's name

    def exception(self) -> object | None: ...

    def stop(self) -> None: ...


class RestartingQuery:
    """A query started by ``start``; ``check()`` starts it again once it has failed and its backoff has passed."""

    def __init__(self, start: Callable[[], Query], policy: RestartPolicy = POLICY,
                 clock: Callable[[], float] = time.monotonic):
        self._start, self._policy, self._clock = start, policy, clock
        self.query: Query = start()
        self._started_at = clock()
        self._failures = 0
        self._restart_at: float | None = None

    def check(self) -> None:
        """Call it often: notices a failure, and restarts the query when its backoff is over."""
        if self._restart_at is None:
            if self.query.isActive:
                return
            error = self.query.exception()
            self._failures = self._policy.failures_after_exit(self._failures, self._clock() - self._started_at)
            delay = self._policy.delay(self._failures)
            self._restart_at = self._clock() + delay
            METRICS.query_restarts.labels(self.query.name).inc()
            log.error(json.dumps({"event": "query_failed", "query": self.query.name, "error": str(error),
                                  "failures_in_a_row": self._failures, "restart_in_s": delay}))
        if self._clock() < self._restart_at:
            return
        try:
            query = self._start()
        except Exception as exc:  # the broker may still be away: try again later, as after a failure
            self._failures += 1
            self._restart_at = self._clock() + self._policy.delay(self._failures)
            log.error(json.dumps({"event": "query_restart_failed", "query": self.query.name, "error": str(exc),
                                  "failures_in_a_row": self._failures}))
            return
        self.query, self._started_at, self._restart_at = query, self._clock(), None
        log.info(json.dumps({"event": "query_restarted", "query": query.name}))
