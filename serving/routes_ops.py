"""Operations routes: liveness, readiness, Prometheus metrics and model reload."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.deps import Services, get_services

router = APIRouter(tags=["operations"])


@router.get("/health")
def health() -> dict[str, str]:
    """The process is up and answering."""
    return {"status": "ok"}


@router.get("/ready")
def ready(services: Annotated[Services, Depends(get_services)]) -> JSONResponse:
    """200 once a model is loaded and the speed view follows its topic, else 503."""
    model = services.model_store.current
    position = services.speed_view.position()
    body = {
        "ready": model is not None and position["following"],
        "model_version": model.version if model else None,
        "model_error": services.model_store.last_error,
        "speed_view": position,
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(services: Annotated[Services, Depends(get_services)]) -> Response:
    model = services.model_store.current
    position = services.speed_view.position()
    m = services.metrics
    m.model_version.set(model.version if model else -1)
    m.speed_view_age.set(position["age_ms"] / 1000 if position["age_ms"] is not None else -1)
    m.speed_view_lag.set(position["lag_records"] if position["lag_records"] is not None else -1)
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)


@router.post("/admin/reload")
async def reload(services: Annotated[Services, Depends(get_services)]) -> JSONResponse:
    """Check the registry now; swaps in a newly published model."""
    store = services.model_store
    try:
        changed = await run_in_threadpool(store.reload)
    except Exception:
        return JSONResponse({"reloaded": False, "error": store.last_error}, status_code=500)
    model = store.current
    return JSONResponse({"reloaded": changed, "model_version": model.version if model else None})
