"""The app factory: versioned routers, middleware, error handling and the followers' lifecycle.

The API lives under ``/v1``; the same routes answer unversioned too (hidden from
the OpenAPI document) so clients and the batch DAG written before versioning keep
working. Operations routes (/health, /ready, /metrics) and the dashboard are unversioned only.
"""

from __future__ import annotations

import gc
import logging
import math
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from lambdarec.key_fingerprint import verify_pseudonym_key
from lambdarec.settings import Settings, get_settings
from lambdarec.pseudonym import is_development_key
from serving.dashboard import routes as dashboard
from serving.api import consent, events, ops, privacy, recommendations
from serving.dashboard.data import Dashboard
from serving.services import Services
from schemas.events import EVENT_NESTING
from serving.idle_gate import CountRequests
from serving.json_depth import event_body_too_deep_at
from serving.limits import BodySizeLimit, InFlightLimit
from serving.metrics import RequestMetrics
from serving.api.security import AuthRefused, refused

log = logging.getLogger(__name__)
API_VERSION = "v1"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start polling the registry, following the speed view and sampling for the dashboard; stop all on shutdown."""
    services: Services = app.state.services
    dashboard: Dashboard = app.state.dashboard
    verify_pseudonym_key(services.settings, "serving")  # a key the lake's pseudonyms were not made with: no start
    services.start()
    dashboard.start()
    # What was imported and built by now lives as long as the process: the cycle collector skips it
    # from here on, so a full collection no longer stalls requests for tens of milliseconds.
    gc.freeze()
    try:
        yield
    finally:
        dashboard.stop()
        services.stop()


def route_template(request: Request) -> str:
    """The matched route's template, e.g. ``/v1/users/{user_id}/recommendations``.

    Logs name this, never ``request.url.path``: the path holds raw user ids, and raw
    ids never leave the ingestion edge.
    """
    return getattr(request.scope.get("route"), "path", "unmatched")


def _masked_trace(request: Request, exc: Exception) -> str:
    """The exception's trace with every raw user id of the request's path replaced by its parameter name."""
    trace = "".join(traceback.format_exception(exc))
    for name, value in request.path_params.items():
        if "user" in name and value:
            trace = trace.replace(str(value), "{" + name + "}")
    return trace


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug answers a plain 500: the trace goes to the log, never to the client.

    The log line names the route template, not the path, and masks the path's user
    id in the trace.
    """
    log.error(
        "unhandled error",
        extra={
            "method": request.method,
            "route": route_template(request),
            "error": type(exc).__name__,
            "trace": _masked_trace(request, exc),
        },
    )
    return JSONResponse({"detail": "internal server error"}, status_code=500)


ECHO_DEPTH = 4
"""How deep a 422 echoes a bad input; deeper containers are echoed as ``"..."`` (a body nested a thousand
levels deep would otherwise exhaust the encoder's recursion)."""


def _json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can carry it: non-finite floats as their JavaScript spelling, lone surrogates
    (which UTF-8 cannot encode) escaped, containers below ``ECHO_DEPTH`` elided."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (dict, list, tuple)) and depth >= ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {_json_safe(key, depth + 1): _json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, depth + 1) for item in value]
    return value


def _too_deep(path: tuple[str | int, ...]) -> dict[str, Any]:
    return {"type": "json_too_deep", "loc": ("body", *path), "input": None,
            "msg": f"nested deeper than the event schema allows (an event nests {EVENT_NESTING} objects: "
                   "itself and its context, whose values are strings)"}


async def _nesting_errors(request: Request, errors: list[Any]) -> list[Any]:
    """``errors`` as they are, or, where a JSON reader gave up at its recursion limit, one error
    naming the field that nests too deep (``serving.json_depth``)."""
    if not any(e.get("type") == "json_invalid" and "recursion limit" in str(e.get("msg")) for e in errors):
        return errors
    return [_too_deep(event_body_too_deep_at(await request.body()) or ())]


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field, as FastAPI answers it, with inputs JSON can carry.

    An input of NaN or Infinity (Python's json reads them, JSON has neither) is
    echoed as text; FastAPI's own handler would fail to encode it and answer 500.
    A body nested past the JSON reader's recursion limit gets one error naming the
    field that nests too deep, not a trace.
    """
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    errors = await _nesting_errors(request, list(errors))
    return JSONResponse({"detail": jsonable_encoder(_json_safe(errors))}, status_code=422)


async def unreadable_body(request: Request, exc: Exception) -> Response:
    """A body Python's ``json`` gave up on by recursion (FastAPI's 400 "error parsing the body") is a
    422 naming the field that nests too deep, as on the batch route; other HTTP errors as FastAPI answers them."""
    if (isinstance(exc, StarletteHTTPException) and exc.status_code == 400
            and isinstance(exc.__cause__, RecursionError)):
        path = event_body_too_deep_at(await request.body()) or ()
        return JSONResponse({"detail": jsonable_encoder(_json_safe([_too_deep(path)]))}, status_code=422)
    return await http_exception_handler(request, exc)  # type: ignore[arg-type]  # registered for HTTPException


class DevelopmentKeyRefused(RuntimeError):
    """Serving will not pseudonymise real users with the public development key."""


def check_pseudonym_key(settings: Settings) -> None:
    if is_development_key(settings.pseudonym_key) and not settings.allow_development_key:
        raise DevelopmentKeyRefused(
            "LAMBDAREC_PSEUDONYM_KEY is the development key, which is in lambdarec's source: anyone could link "
            "its pseudonyms back to user ids. Set LAMBDAREC_PSEUDONYM_KEY to a secret of your own (e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or, for development only, "
            "LAMBDAREC_ALLOW_DEVELOPMENT_KEY=true."
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """A serving app on ``settings`` (the environment's when None).

    Services are built here but start only with the app's lifespan, so a test
    client without lifespan touches neither the broker nor the lake.
    """
    settings = settings or get_settings()
    check_pseudonym_key(settings)
    app = FastAPI(
        title="lambdarec",
        summary="Real-time personalised recommendations (batch ALS + speed view).",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.services = services = Services.build(settings)
    app.state.dashboard = Dashboard(services)
    for router in (events.router, consent.router, recommendations.router, privacy.router, ops.admin):
        app.include_router(router, prefix=f"/{API_VERSION}")
        app.include_router(router, include_in_schema=False)
    app.include_router(ops.router)
    app.include_router(dashboard.router)
    app.add_exception_handler(Exception, internal_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, unreadable_body)
    app.add_exception_handler(AuthRefused, refused)  # 401/403 naming the scope the route needs
    app.add_middleware(CountRequests, gate=services.idle_gate)
    app.add_middleware(BodySizeLimit, max_bytes=settings.ingest_max_body_bytes)
    app.add_middleware(InFlightLimit, limit=settings.serve_max_in_flight)
    app.add_middleware(RequestMetrics, metrics=services.metrics)  # outermost: times 413s and 503s too
    return app
