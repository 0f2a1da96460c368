"""Limits the app applies to each request: the body's size, and how many requests are in flight.

Content-Length is checked up front; the streamed size is checked too, because a
chunked request has no Content-Length and a client may lie about it. The
streamed check raises an HTTPException from ``receive`` so that FastAPI's body
parser passes it through as a 413 rather than a generic parse error. A body cut
off before its end (the server's body timeout, ``serving.http_server``, or the
client leaving) ends the same way as a 408, not as an unhandled error.

Connection-level limits (head size, timeouts, connections) are the HTTP server's,
``serving.http_server``.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBES = frozenset({"/health", "/ready"})
"""Paths no limit on requests in flight refuses: a busy worker must not look dead to its supervisor."""


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.detail = f"request body exceeds {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await JSONResponse({"detail": self.detail}, status_code=413)(scope, receive, send)
            return
        received = 0
        whole = False

        async def counting_receive() -> Message:
            nonlocal received, whole
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                whole = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise HTTPException(413, detail=self.detail)
            elif message["type"] == "http.disconnect" and not whole:
                raise HTTPException(408, detail="the request body ended before it was whole")
            return message

        await self.app(scope, counting_receive, send)


class InFlightLimit:
    """ASGI middleware: at most ``limit`` requests in this worker's app at once, beyond that a 503 with
    Retry-After, so that a flood queues in no worker; probes (``PROBES``) always go through."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit
        self.in_flight = 0  # the event loop's thread alone counts
        self.refusal = JSONResponse({"detail": f"serving has {limit} requests in flight, its limit "
                                     "(serve_max_in_flight); retry after Retry-After seconds"},
                                    status_code=503, headers={"Retry-After": "1"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await self.refusal(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
