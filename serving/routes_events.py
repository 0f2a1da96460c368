"""Ingestion routes: ``POST /events`` and ``POST /events/batch``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from lambdarec.settings import Settings
from schemas.events import Event
from serving.deps import Services, get_services, get_settings
from serving.api_models import Error
from serving.ingest import BrokerUnavailable
from serving.rate_limit import retry_after_header

router = APIRouter(tags=["events"])


class IngestResponse(BaseModel):
    accepted: list[str]
    dropped_no_consent: list[str]


class BrokerDown(BaseModel):
    detail: str
    error: str = "broker_unavailable"
    retryable: bool = True


RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": Error, "description": "Body or batch too large."},
    429: {"model": Error, "description": "Over the ingestion rate limit; retry after Retry-After seconds."},
    503: {"model": BrokerDown, "description": "The broker did not acknowledge the events; retry."},
}


async def _check_batch_size(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """413 before the events are validated one by one (the parsed body is Starlette's cache)."""
    body = await request.json()
    if isinstance(body, list) and len(body) > settings.ingest_max_batch:
        raise HTTPException(
            413, detail=f"batch has {len(body)} events; at most {settings.ingest_max_batch} per request"
        )


def _publish(services: Services, request: Request, events: list[Event]) -> IngestResponse | JSONResponse:
    client = request.client.host if request.client else "unknown"
    wait_s = services.rate_limiter.take(client, len(events))
    if wait_s is not None:
        services.metrics.events.labels("rate_limited").inc(len(events))
        detail = f"over the ingestion rate limit of {services.settings.ingest_rate_limit_per_s:g} events/s"
        return JSONResponse({"detail": detail}, status_code=429, headers={"Retry-After": retry_after_header(wait_s)})
    try:
        result = services.ingestor.publish(events)
    except BrokerUnavailable as exc:
        services.metrics.events.labels("broker_unavailable").inc(len(events))
        body = BrokerDown(
            detail=f"the event broker did not acknowledge the events ({exc}); retry the request, "
            "events are deduplicated by event_id"
        )
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})
    services.metrics.events.labels("accepted").inc(len(result.accepted))
    services.metrics.events.labels("dropped_no_consent").inc(len(result.dropped_no_consent))
    return IngestResponse(accepted=result.accepted, dropped_no_consent=result.dropped_no_consent)


@router.post("/events", status_code=202, response_model=IngestResponse, responses=RESPONSES)
def post_event(event: Event, request: Request, services: Annotated[Services, Depends(get_services)]):
    """Take one event. Acknowledged (202) once the broker has it, or dropped without consent."""
    return _publish(services, request, [event])


@router.post(
    "/events/batch",
    status_code=202,
    response_model=IngestResponse,
    responses=RESPONSES,
    dependencies=[Depends(_check_batch_size)],
)
def post_events(events: list[Event], request: Request, services: Annotated[Services, Depends(get_services)]):
    """Take up to ``ingest_max_batch`` events; a 202 means every consented one is on the topic."""
    return _publish(services, request, events)
