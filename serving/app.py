"""The app factory: routers, middleware and the background followers' lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lambdarec.settings import Settings, get_settings
from serving import routes_events, routes_ops, routes_recommendations
from serving.deps import Services
from serving.limits import BodySizeLimit
from serving.metrics import RequestMetrics


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start polling the registry and following the speed view; stop both on shutdown."""
    services: Services = app.state.services
    services.start()
    try:
        yield
    finally:
        services.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A serving app on ``settings`` (the environment's when None).

    Services are built here but start only with the app's lifespan, so a test
    client without lifespan touches neither the broker nor the lake.
    """
    settings = settings or get_settings()
    app = FastAPI(
        title="lambdarec",
        summary="Real-time personalised recommendations (batch ALS + speed view).",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.services = services = Services.build(settings)
    app.dependency_overrides[get_settings] = lambda: settings
    app.include_router(routes_events.router)
    app.include_router(routes_recommendations.router)
    app.include_router(routes_ops.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.ingest_max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=services.metrics)  # outermost: times 413s too
    return app
