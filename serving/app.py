"""The app factory: versioned routers, middleware, error handling and the followers' lifecycle.

The API lives under ``/v1``; the same routes answer unversioned too (hidden from
the OpenAPI document) so clients and the batch DAG written before versioning keep
working. Operations routes (/health, /ready, /metrics) are unversioned only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lambdarec.settings import Settings, get_settings
from serving import routes_events, routes_ops, routes_recommendations
from serving.deps import Services
from serving.idle_gate import CountRequests
from serving.limits import BodySizeLimit
from serving.metrics import RequestMetrics

log = logging.getLogger(__name__)
API_VERSION = "v1"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start polling the registry and following the speed view; stop both on shutdown."""
    services: Services = app.state.services
    services.start()
    try:
        yield
    finally:
        services.stop()


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug answers a plain 500: the trace goes to the log, never to the client."""
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A serving app on ``settings`` (the environment's when None).

    Services are built here but start only with the app's lifespan, so a test
    client without lifespan touches neither the broker nor the lake.
    """
    settings = settings or get_settings()
    app = FastAPI(
        title="lambdarec",
        summary="Real-time personalised recommendations (batch ALS + speed view).",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.services = services = Services.build(settings)
    app.dependency_overrides[get_settings] = lambda: settings
    for router in (routes_events.router, routes_recommendations.router, routes_ops.admin):
        app.include_router(router, prefix=f"/{API_VERSION}")
        app.include_router(router, include_in_schema=False)
    app.include_router(routes_ops.router)
    app.add_exception_handler(Exception, internal_error)
    app.add_middleware(CountRequests, gate=services.idle_gate)
    app.add_middleware(BodySizeLimit, max_bytes=settings.ingest_max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=services.metrics)  # outermost: times 413s too
    return app
