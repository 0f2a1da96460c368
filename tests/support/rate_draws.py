"""What each process of tests/unit/test_rate_limit.py runs: a module of its own, so that a spawned
process imports the rate-limit table and nothing of the app."""

from __future__ import annotations

from pathlib import Path

from serving.rate_limit import BucketTable

SLOW = 1e-9  # tokens a second: no whole token comes back within a test


def draw_until_refused(path: str, start, burst: int, drawn) -> None:
    """Draw one token at a time from the caller "shared" once every process is ready, until refused; put
    how many were granted on ``drawn``."""
    table = BucketTable.open(Path(path))
    start.wait()
    count = 0
    while table.take("shared", 1, SLOW, burst) is None:
        count += 1
    drawn.put(count)
