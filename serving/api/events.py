"""Ingestion routes: ``POST /events`` and ``POST /events/batch``."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.events import Event
from serving.services import Services, get_services
from serving.api.models import Error
from serving.api.event_limits import refuse_outside_limits
from serving.ingest import BrokerUnavailable
from serving.rate_limit import caller
from serving.api.security import INGEST, responses

router = APIRouter(tags=["events"], dependencies=[Depends(INGEST)], responses=responses("ingest"))


class IngestResponse(BaseModel):
    accepted: list[str]
    dropped_no_consent: list[str]


class BrokerDown(BaseModel):
    detail: str
    error: str = "broker_unavailable"
    retryable: bool = True


RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": Error, "description": "Body or batch too large."},
    429: {"model": Error, "description": "Over the caller's ingestion rate limit (ingest_rate_limit_per_s); retry "
          "after Retry-After seconds."},
    503: {"model": BrokerDown, "description": "The broker did not acknowledge the events; retry."},
}


EVENTS = TypeAdapter(list[Event])
BATCH_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Event"},
                                                "title": "Events"}}},
}
"""The batch route's request body in the OpenAPI document, as FastAPI writes it for a ``list[Event]`` parameter."""
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"description": "Validation Error",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}},
}


def parse_batch(body: bytes, max_batch: int) -> list[Event]:
    """The batch's events, parsed and validated in one pass over the raw body (pydantic-core's JSON
    reader: a third less CPU than ``json.loads`` and then validation, README: measurements).

    A batch over ``max_batch`` is a 413 whether or not its events are valid, as before
    validation; a bad event is a 422 naming its position and field, as FastAPI names it.
    """
    try:
        events = EVENTS.validate_json(body)
    except ValidationError as exc:
        _check_count(_length(body), max_batch)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]) from None
    _check_count(len(events), max_batch)
    return events


def _length(body: bytes) -> int:
    """How many items a JSON array body holds (0 for anything else): only on the error path."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # nested too deep: the 422 names where (serving.app)
        return 0
    return len(parsed) if isinstance(parsed, list) else 0


def _check_count(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise HTTPException(413, detail=f"batch has {count} events; at most {max_batch} per request")


def _publish(services: Services, request: Request, events: list[Event]) -> IngestResponse | JSONResponse:
    wait_s = services.event_rate.take(caller(request), len(events))
    if wait_s is not None:
        services.metrics.events.labels("rate_limited").inc(len(events))
        return services.event_rate.refusal(wait_s)
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
    refuse_outside_limits([event], services.settings.event_limits, batch=False)
    return _publish(services, request, [event])


@router.post(
    "/events/batch",
    status_code=202,
    response_model=IngestResponse,
    responses={**RESPONSES, **INVALID},
    openapi_extra={"requestBody": BATCH_BODY},
)
async def post_events(request: Request, services: Annotated[Services, Depends(get_services)]):
    """Take up to ``ingest_max_batch`` events; a 202 means every consented one is on the topic."""
    events = parse_batch(await request.body(), services.settings.ingest_max_batch)
    refuse_outside_limits(events, services.settings.event_limits, batch=True)
    return await run_in_threadpool(_publish, services, request, events)
