"""The app's own request limits (serving.limits), driven as uvicorn drives an ASGI app, with no server.

The connection limits, which need a real server and real sockets, are
tests/integration/test_serving_http_limits.py's.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI, Request

from serving.limits import BodySizeLimit, InFlightLimit

pytestmark = pytest.mark.unit


def scope(path: str, method: str = "GET", headers: list | None = None) -> dict:
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers or [], "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 5000), "root_path": ""}


async def call(app, request_scope: dict, messages: list[dict]) -> tuple[int, dict, bytes]:
    """Run one request through ``app``: its status, headers and body."""
    incoming = iter(messages)
    sent: list[dict] = []

    async def receive() -> dict:
        return next(incoming, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        sent.append(message)

    await app(request_scope, receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


class Held:
    """An app whose requests stay in flight until released, counting those inside."""

    def __init__(self) -> None:
        self.inside = 0
        self.release = asyncio.Event()

    async def __call__(self, request_scope, receive, send) -> None:
        self.inside += 1
        if request_scope["path"] != "/health":
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def until(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.001)


def test_requests_beyond_the_in_flight_limit_get_503_with_retry_after_and_probes_never_do():
    async def scenario() -> None:
        held = Held()
        app = InFlightLimit(held, limit=2)
        first = [asyncio.create_task(call(app, scope("/v1/users/u/recommendations"), [])) for _ in range(2)]
        await until(lambda: held.inside == 2)
        status, headers, body = await call(app, scope("/v1/users/u/recommendations"), [])
        assert status == 503 and headers["retry-after"] == "1"
        assert "serve_max_in_flight" in json.loads(body)["detail"]
        assert held.inside == 2  # the refused request never reached the app
        assert (await call(app, scope("/health"), []))[0] == 200
        probe = asyncio.create_task(call(app, scope("/ready"), []))  # held like the others, yet let in
        await until(lambda: held.inside == 4)
        held.release.set()
        assert [(await task)[0] for task in [*first, probe]] == [200, 200, 200]
        assert (await call(app, scope("/v1/users/u/recommendations"), []))[0] == 200  # room again

    asyncio.run(scenario())


def test_a_body_cut_off_before_its_end_is_a_408_not_an_error():
    api = FastAPI()

    @api.post("/events/batch")
    async def take(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    app = BodySizeLimit(api, max_bytes=1024)
    headers = [(b"content-type", b"application/json")]
    cut = [{"type": "http.request", "body": b"[{", "more_body": True}, {"type": "http.disconnect"}]
    status, _, body = asyncio.run(call(app, scope("/events/batch", "POST", headers), cut))
    assert status == 408 and "before it was whole" in json.loads(body)["detail"]
    whole = [{"type": "http.request", "body": b"[{", "more_body": True},
             {"type": "http.request", "body": b"}]", "more_body": False}]
    assert asyncio.run(call(app, scope("/events/batch", "POST", headers), whole))[0] == 200
