"""Ingestion rate limit: a token bucket per client address, refilled at a steady rate.

A request costs one token per event; one that would overdraw the bucket is
refused whole (nothing produced) with the seconds until it would fit.
"""

from __future__ import annotations

import math
import threading
import time

CLIENTS_KEPT = 100_000  # buckets for this many addresses; the oldest full ones go first


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int):
        self.rate = rate_per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str, cost: int) -> float | None:
        """None if ``client`` may send ``cost`` events now, else the seconds to wait."""
        if self.rate <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if cost > tokens:
                self._buckets[client] = (tokens, now)
                missing = cost - tokens if cost <= self.burst else cost
                return missing / self.rate
            self._buckets[client] = (tokens - cost, now)
            if len(self._buckets) > CLIENTS_KEPT:
                self._buckets.pop(next(iter(self._buckets)))
        return None


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
