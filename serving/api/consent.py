"""Consent route: a user grants or withdraws consent, per purpose (``schemas.consent``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from lambdarec import consent
from lambdarec.pseudonym import pseudonymise
from schemas.consent import PERSONALISATION, ConsentChange, Purpose
from serving.api import audit_trail
from serving.services import Services, get_services
from serving.api.models import Error
from serving.ingest import BrokerUnavailable
from serving.rate_limit import caller
from serving.api.events import BrokerDown
from serving.api.security import CONSENT, responses

router = APIRouter(tags=["consent"], dependencies=[Depends(CONSENT)], responses=responses("consent"))


class ConsentRequest(BaseModel):
    purpose: Purpose = Field(PERSONALISATION, description="What the consent is for.")
    granted: bool = Field(description="true grants, false withdraws.")


class ConsentAccepted(BaseModel):
    change_id: str
    purpose: Purpose
    granted: bool
    changed_at: str
    erasure_request_id: str | None = Field(
        None, description="With erasure_on_withdrawal, the erasure this withdrawal starts (GET its receipt).")


@router.post("/users/{user_id}/consent", status_code=202, response_model=ConsentAccepted,
             responses={503: {"model": BrokerDown, "description": "The broker did not take the change; retry."},
                        429: {"model": Error, "description": "Over the caller's consent rate limit "
                              "(consent_rate_limit_per_s); retry after Retry-After seconds."}})
async def change_consent(
    user_id: Annotated[str, Path(min_length=1, max_length=128)],
    body: ConsentRequest,
    request: Request,
    services: Annotated[Services, Depends(get_services)],
) -> JSONResponse:
    """Record a grant or a withdrawal. Acknowledged once the broker has it; serving applies it at once.
    After a withdrawal of personalisation the user's later events reach no table and their
    recommendations are non-personal, until they grant it again."""
    wait_s = services.consent_rate.take(caller(request), 1)
    if wait_s is not None:
        return services.consent_rate.refusal(wait_s)
    change = ConsentChange.new(pseudonymise(user_id, services.settings.pseudonym_key), body.purpose, body.granted)
    what = f"{body.purpose} {'granted' if body.granted else 'withdrawn'}, change {change.change_id}"
    try:
        at = await run_in_threadpool(services.ingestor.publish_consent, change)
    except BrokerUnavailable as exc:
        await audit_trail.record(services, audit_trail.entry(request, "consent.change", "broker_down", change.user_id, what))
        detail = f"the event broker did not acknowledge the consent change ({exc}); retry"
        return JSONResponse(BrokerDown(detail=detail).model_dump(), status_code=503)
    services.consents.change(change, at)
    erasure = (consent.erasure_request_id(change.change_id)
               if services.settings.erasure_on_withdrawal and body.purpose == PERSONALISATION and not body.granted
               else None)
    await audit_trail.record(services, audit_trail.entry(
        request, "consent.change", "accepted", change.user_id, what + (f", erasure {erasure}" if erasure else "")))
    accepted = ConsentAccepted(change_id=change.change_id, purpose=change.purpose, granted=change.granted,
                               changed_at=change.changed_at.isoformat(), erasure_request_id=erasure)
    return JSONResponse(accepted.model_dump(), status_code=202)
