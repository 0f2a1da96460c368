"""When the supervisor starts a dead component again: exponential backoff, and when it gives up.

A component that keeps dying (a port held, a broken config) must not spin two
cores in a restart loop, and one that ran a long while and then died should
come back at once. A component that never got ready in its first few starts
is broken, not unlucky: ``lambdarec up`` fails and says why instead of
retrying until its deadline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    base_s: float = 1.0
    """Wait before the first restart after a failure."""
    max_s: float = 60.0
    """The longest wait between two starts."""
    stable_s: float = 60.0
    """Ready this long, a component's failure count starts afresh."""
    start_attempts: int = 3
    """Starts a component gets to become ready the first time before ``up`` fails."""

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next start after ``failures`` failures in a row (1, 2, 4 … max_s)."""
        if failures <= 0:
            return 0.0
        return min(self.max_s, self.base_s * 2 ** min(failures - 1, 30))

    def failures_after_exit(self, failures: int, ready_for_s: float | None) -> int:
        """The failure count once a component has exited, ``ready_for_s`` after it got ready (None: never ready)."""
        if ready_for_s is not None and ready_for_s >= self.stable_s:
            return 1
        return failures + 1

    def gives_up(self, ever_ready: bool, starts: int) -> bool:
        """True when a component that was never ready has used its start attempts."""
        return not ever_ready and starts >= self.start_attempts
