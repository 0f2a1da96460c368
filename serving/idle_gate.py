"""Lets a server's background work run between requests instead of beside them.

A model swap maps the new model, reads its pages and builds the caches requests
derive from it, on a worker thread. Only one thread runs Python at a time, so
every step of that work that overlaps a request slows the request down, and on a
busy server the time lost piles up into a queue that outlasts the swap itself
(the README's "Measurements behind the design" has the figures). Work that calls ``pause()`` between short steps runs each step only once no
request is in flight, so a request waits at most for the rest of one step. When
requests never stop, ``pause()`` gives way after ``max_wait_s``: a saturated
server must still swap.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Receive, Scope, Send

MAX_WAIT_S = 0.05


class IdleGate:
    """Counts requests in flight; ``pause()`` blocks the calling thread until there are none."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S):
        self.max_wait_s = max_wait_s
        self._in_flight = 0
        self._idle = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> None:
        with self._idle:
            self._in_flight += 1

    def leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def pause(self) -> bool:
        """Wait until no request is in flight (at most ``max_wait_s``); True if it got there."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=self.max_wait_s)

    @contextmanager
    def outside(self) -> Iterator[None]:
        """The calling request stops counting while it waits for background work of its own
        (``/admin/reload`` waits for the swap, which pauses for the other requests)."""
        self.leave()
        try:
            yield
        finally:
            self.enter()


class CountRequests:
    """ASGI middleware: every HTTP request is in flight in ``gate`` until its response is sent."""

    def __init__(self, app: ASGIApp, gate: IdleGate):
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.gate.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.leave()
