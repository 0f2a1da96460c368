"""Serving's HTTP server: uvicorn's httptools protocol with the connection limits uvicorn lacks, and the one
uvicorn config that ``lambdarec serve`` runs on, in one process or several (``serving.workers``).

Out of the box uvicorn reads a request head of any size, keeps a connection that sends nothing,
or a byte a second, open for ever, and its one concurrency limit (``limit_concurrency``) answers
503 to every new request, /health's included, once connections pile up: a few hundred slow
clients would take serving down. ``LimitedHttpProtocol`` adds, per connection:

- a deadline for each wait on the client: a request head must be whole within
  ``serve_header_timeout_s`` of the connection opening (or ``serve_keep_alive_s`` + that after
  the previous response), a body within ``serve_body_timeout_s`` of its head; past it the
  client gets a 408 and the connection is closed;
- a request target over ``serve_max_url_bytes`` gets a 414, header fields over
  ``serve_max_header_bytes`` or ``serve_max_headers`` a 431, before the app sees the request;
  a head still arriving is cut (431) once it is larger than all of them allow together, so
  httptools buffers at most one read more than that;
- at most ``serve_max_connections`` per worker: at the cap a new connection closes the
  connection that has waited longest with no request in flight (idle keep-alive, or a head
  still arriving), so slow clients cannot crowd out a probe; a new connection is refused
  only when every other one has a request in flight.

Requests in flight are limited in the app (``serving.limits.InFlightLimit``), which never
refuses /health or /ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import weakref
from dataclasses import dataclass
from itertools import chain
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from lambdarec.settings import Settings

log = logging.getLogger(__name__)

FIELD_OVERHEAD = 4  # ": " and CRLF around each header field on the wire
LINE_OVERHEAD = 64  # the request line's method, version and separators; the blank line after the fields
FILES_BESIDE_CONNECTIONS = 256  # open files a serving process needs besides its connections (Kafka, lake, logs)


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float
    body_timeout_s: float
    keep_alive_s: int
    max_url_bytes: int
    max_header_bytes: int
    max_headers: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(header_timeout_s=settings.serve_header_timeout_s, body_timeout_s=settings.serve_body_timeout_s,
                   keep_alive_s=settings.serve_keep_alive_s, max_url_bytes=settings.serve_max_url_bytes,
                   max_header_bytes=settings.serve_max_header_bytes, max_headers=settings.serve_max_headers,
                   max_connections=settings.serve_max_connections)

    @property
    def max_head_bytes(self) -> int:
        """The most a whole request head within the limits takes on the wire."""
        return self.max_url_bytes + self.max_header_bytes + FIELD_OVERHEAD * self.max_headers + LINE_OVERHEAD


class LimitedConfig(uvicorn.Config):
    """uvicorn's config, carrying the limits to every worker's protocol (uvicorn pickles it for each)."""

    def __init__(self, app: Any, limits: HttpLimits, **kwargs: Any):
        super().__init__(app, http=LimitedHttpProtocol, timeout_keep_alive=limits.keep_alive_s, **kwargs)
        self.limits = limits


def uvicorn_config(settings: Settings, app: Any, host: str, port: int, workers: int = 1) -> LimitedConfig:
    """The config of every serving process: ``app`` is the app, or an app factory's import path for workers."""
    return LimitedConfig(app, HttpLimits.from_settings(settings), host=host, port=port, workers=workers,
                         factory=isinstance(app, str), log_config=None,
                         access_log=False)  # RequestMetrics logs each request as JSON


def serve(config: LimitedConfig) -> bool:
    """Serve on this process until stopped; False if the server never started."""
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl+C's signal again once it has stopped
        server.run()
    return server.started


def fit_open_files(max_connections: int) -> None:
    """Raise this process's open-files limit (its workers inherit it) to hold ``max_connections``: past the
    limit the kernel refuses to accept, and uvicorn stops accepting anyone for a second at a time."""
    needed = max_connections + FILES_BESIDE_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < needed:
            log.warning("open-files limit too low for serve_max_connections",
                        extra={"hard_limit": hard, "serve_max_connections": max_connections, "needed": needed})


class HeadRefused(Exception):
    """Raised from a parser callback to stop reading a head over a limit; uvicorn then calls
    ``send_400_response``, which answers the refusal instead."""


_waiting: weakref.WeakKeyDictionary[ServerState, dict[LimitedHttpProtocol, None]] = weakref.WeakKeyDictionary()


class LimitedHttpProtocol(HttpToolsProtocol):
    """One connection, under ``LimitedConfig.limits`` (module docstring)."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, LimitedConfig)
        self.limits = config.limits
        # this server's connections with no request in flight, the longest waiting first
        self.waiting = _waiting.setdefault(server_state, {})
        self.deadline: float | None = None  # when the wait on the client must be over; None: no wait
        self.timer: asyncio.TimerHandle | None = None  # fires at or before the deadline
        self.head_open = False  # a request head has begun and is not whole
        self.body_open = False  # a request head is whole and its body is not
        self.head_bytes_read = 0  # bytes read outside a body since the last head was whole, read by read
        self.refusal: tuple[int, str] | None = None

    # connection lifecycle

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self.transport.close()
            return
        self.waiting[self] = None
        self._wait(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.waiting.pop(self, None)
        self._wait(None)

    def _make_room(self) -> bool:
        """Close the connection waiting longest with no request in flight; False if there is none."""
        for oldest in self.waiting:
            del self.waiting[oldest]
            oldest._wait(None)
            oldest.transport.close()
            return True
        return False

    # the parser's callbacks

    def data_received(self, data: bytes) -> None:
        if not self.body_open:  # a head, or what comes before one
            self.head_bytes_read += len(data)
        super().data_received(data)
        if not self.body_open and self.head_bytes_read > self.limits.max_head_bytes and not self.transport.is_closing():
            self._answer(431, f"request head exceeds {self.limits.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_open = True
        if self.deadline is None:  # a pipelined request: the previous one's wait was for its body
            self._wait(self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        self.head_open, self.body_open, self.head_bytes_read = False, True, 0
        self._check_head()
        self.waiting.pop(self, None)
        self._wait(self.limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.body_open = False
        answered = self.cycle is not None and self.cycle.response_complete
        self._wait(self._next_head_s() if answered else None)  # answered early: the next head is due

    def on_response_complete(self) -> None:
        next_queued = bool(self.pipeline)
        super().on_response_complete()
        if next_queued or self.transport.is_closing():
            return
        self.waiting[self] = None
        if not self.body_open:  # else the body's deadline stands
            self._wait(self._next_head_s())

    def send_400_response(self, msg: str) -> None:
        if self.refusal is None:
            super().send_400_response(msg)
        else:
            self._answer(*self.refusal)

    def _check_head(self) -> None:
        """Refuse a whole head over the limits (``data_received`` already cut one that grew past all of them)."""
        if len(self.url) > self.limits.max_url_bytes:
            self._refuse(414, f"request target exceeds {self.limits.max_url_bytes} bytes (serve_max_url_bytes)")
        if len(self.headers) > self.limits.max_headers:
            self._refuse(431, f"more than {self.limits.max_headers} header fields (serve_max_headers)")
        if sum(map(len, chain.from_iterable(self.headers))) > self.limits.max_header_bytes:
            self._refuse(431, f"header fields exceed {self.limits.max_header_bytes} bytes (serve_max_header_bytes)")

    # deadlines

    def _next_head_s(self) -> float:
        return self.limits.keep_alive_s + self.limits.header_timeout_s

    def _wait(self, seconds: float | None) -> None:
        """From now the client has ``seconds`` to deliver what is awaited (None: nothing is).

        One timer per connection, moved only when the deadline comes closer: a request
        through its head, body and response mostly just sets ``deadline``.
        """
        self.deadline = None if seconds is None else self.loop.time() + seconds
        if self.deadline is None or (self.timer is not None and self.timer.when() <= self.deadline):
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(self.deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self.timer = None
        if self.deadline is None or self.transport.is_closing():
            return
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._check_deadline)
        elif self.pipeline:  # uvicorn stops reading while a pipelined request queues: the wait is not the client's
            self._wait(self.limits.body_timeout_s)
        elif self.body_open and self.cycle is not None and not self.cycle.response_started:
            self.cycle.disconnected = True  # the app reads the end of the body as the client leaving
            self.cycle.message_event.set()
            self._answer(408, f"request body not received within {self.limits.body_timeout_s:g} s")
        elif self.head_open:
            self._answer(408, f"request head not received within {self.limits.header_timeout_s:g} s")
        else:
            self.transport.close()

    # refusals

    def _refuse(self, status: int, detail: str) -> None:
        self.refusal = (status, detail)
        raise HeadRefused(detail)

    def _answer(self, status: int, detail: str) -> None:
        """Answer ``status`` and close, unless a response to an earlier request is still to come: then only close."""
        if self.cycle is None or self.cycle.response_complete or self.cycle.disconnected:
            body = json.dumps({"detail": detail}).encode()
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head.extend([name, b": ", value, b"\r\n"])
            head.extend([b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
                         b"\r\nconnection: close\r\n\r\n", body])
            self.transport.write(b"".join(head))
        self.transport.close()
        log.info("connection refused", extra={"status": status, "detail": detail})
