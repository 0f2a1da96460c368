"""Operations routes: liveness, readiness, Prometheus metrics, and the admin model reload.

/health, /ready and /metrics need no credential: they reveal no user's data. The reload needs an
API key with the admin scope and is audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.api.models import Error, ReadyResponse, ReloadResponse
from serving.api import audit_trail
from serving.services import Services, get_services
from serving.api.security import ADMIN, responses

router = APIRouter(tags=["operations"])
admin = APIRouter(tags=["admin"], dependencies=[Depends(ADMIN)], responses=responses("admin"))


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and answering. On the event loop: no wait for a thread that busy routes hold."""
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "No model yet, or the speed view is not loaded."}},
)
def ready(services: Annotated[Services, Depends(get_services)]) -> JSONResponse:
    """200 once a model is loaded and the speed view is bootstrapped and following, else 503."""
    model = services.model_store.current
    body = ReadyResponse(
        ready=services.ready(),
        model_version=model.version if model else None,
        model_error=services.model_store.last_error,
        speed_view=services.speed_view.position(),
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(services: Annotated[Services, Depends(get_services)]) -> Response:
    """Prometheus text: latency per route, freshness, the model and training runs, speed-view lag."""
    services.metrics.observe_views(services.model_store, services.speed_view)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@admin.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses={
        500: {"model": Error, "description": "The published model could not be loaded; the old one serves."},
    },
)
async def reload(http: Request, services: Annotated[Services, Depends(get_services)]) -> JSONResponse:
    """Check the registry now and swap in a newly published model (the batch DAG calls this)."""
    store = services.model_store
    try:
        with services.idle_gate.outside():  # the swap pauses for the other requests, not this one
            changed = await run_in_threadpool(store.reload)
    except Exception:
        await audit_trail.record(services, audit_trail.entry(http, "model.reload", "failed"))
        return JSONResponse({"detail": store.last_error or "reload failed"}, status_code=500)
    model = store.current
    await audit_trail.record(services, audit_trail.entry(
        http, "model.reload", "reloaded" if changed else "unchanged", detail=f"model {model.version if model else None}"))
    return JSONResponse({"reloaded": changed, "model_version": model.version if model else None})
