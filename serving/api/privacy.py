"""Privacy routes (API keys with the admin scope): erase a user, read an erasure's receipt, export what is held on a
user. Each call appends a row to the audit log."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from kafka.errors import KafkaError
from pydantic import AfterValidator

from lambdarec import privacy

from serving import export
from lambdarec.audit import Entry
from lambdarec.pseudonym import pseudonymise
from serving.api.models import ErasureAccepted, ErasurePlace, ErasureReceipt, Error
from serving.api import audit_trail
from serving.services import Services, get_services
from serving import recommend as rec
from serving.api.security import ADMIN, responses

router = APIRouter(tags=["privacy"], dependencies=[Depends(ADMIN)], responses=responses("admin"))


def _printable(request_id: str | None) -> str | None:
    """A request id the request log takes (a 422 naming request_id otherwise, not a 500 from the log)."""
    return None if request_id is None else privacy.check_request_id(request_id)


RequestId = Annotated[str | None, Query(min_length=1, max_length=privacy.REQUEST_ID_MAX,
                                         description="Idempotency key: the same id again repeats nothing."),
                      AfterValidator(_printable)]


@router.delete(
    "/users/{user_id}",
    status_code=202,
    response_model=ErasureAccepted,
    responses={409: {"model": Error, "description": "request_id names another user's erasure."},
               503: {"model": Error, "description": "The request could not be recorded; nothing was done."}},
)
async def erase_user(
    user_id: Annotated[str, Path(min_length=1, max_length=128)],
    http: Request,
    services: Annotated[Services, Depends(get_services)],
    request_id: RequestId = None,
) -> JSONResponse:
    """Erase the user from every layer. The request is recorded before this answers; serving forgets
    the user at once, and the erasure job removes their data from the lake and writes the receipt."""
    pseudonym = pseudonymise(user_id, services.settings.pseudonym_key)
    rid = request_id or privacy.new_request_id()

    def record() -> privacy.ErasureRequest:
        return privacy.record_erasure(services.lake, pseudonym, rid, "api",
                                      privacy.events_end_offsets(services.settings))

    def audited(outcome: str) -> Entry:
        return audit_trail.entry(http, "user.erase", outcome, pseudonym, f"request {rid}")

    try:
        request = await run_in_threadpool(record)
    except privacy.RequestConflict as exc:
        await audit_trail.record(services, audited("conflict"))
        raise HTTPException(409, detail=str(exc)) from exc
    except KafkaError as exc:
        await audit_trail.record(services, audited("broker_down"))
        raise HTTPException(503, detail=f"the events topic's offsets could not be read ({exc}); retry") from exc
    done = privacy.receipt(services.lake, rid) is not None
    if not done:
        services.erasures.erase(request)
    await audit_trail.record(services, audited("completed" if done else "pending"))
    body = ErasureAccepted(request_id=rid, status="completed" if done else "pending",
                           received_at=request.requested_at.isoformat(), receipt=f"/v1/admin/erasures/{rid}")
    return JSONResponse(body.model_dump(), status_code=202)


@router.get("/admin/erasures/{request_id}", response_model=ErasureReceipt,
            responses={404: {"model": Error, "description": "No such request."}})
def erasure_receipt(
    request_id: Annotated[str, Path(min_length=1, max_length=privacy.REQUEST_ID_MAX)],
    http: Request,
    services: Annotated[Services, Depends(get_services)],
) -> ErasureReceipt:
    """The erasure's receipt once completed, else its pending state."""
    lake = services.lake
    found = privacy.receipt(lake, request_id)
    if found is None:
        request = privacy.request(lake, request_id)
        if request is None:
            audit_trail.record_blocking(services, _receipt_read(http, "not_found", request_id))
            raise HTTPException(404, detail=f"request_id {request_id!r} is unknown")
        audit_trail.record_blocking(services, _receipt_read(http, "pending", request_id, request.subject_hash))
        return ErasureReceipt(request_id=request_id, status="pending", subject_hash=request.subject_hash,
                              received_at=request.requested_at.isoformat())
    audit_trail.record_blocking(services, _receipt_read(http, "completed", request_id, found["subject_hash"]))
    times = {name: found[name].isoformat() if found[name] else None
             for name in ("received_at", "completed_at", "kafka_expires_by")}
    return ErasureReceipt(
        request_id=request_id, status="completed", subject_hash=found["subject_hash"], **times,
        removed=found["removed"], delete_versions=found["delete_versions"], vacuum_versions=found["vacuum_versions"],
        vacuum_retention_hours=found["vacuum_retention_hours"],
        first_model_without_user=privacy.first_model_without(lake, found["delete_versions"].get("events")),
        places=[ErasurePlace(**{**p, "gone_by": p["gone_by"].isoformat() if p["gone_by"] else None})
                for p in found["places"]],
    )


@router.get("/admin/users/{user_id}/export", response_model=dict[str, Any],
            responses={404: {"model": Error, "description": "Nothing is held on the user."}})
async def export_user(
    user_id: Annotated[str, Path(min_length=1, max_length=128)],
    http: Request,
    services: Annotated[Services, Depends(get_services)],
) -> dict[str, Any]:
    """Everything held on the user, as one JSON document: their events, features and profile, consent
    history, dead letters, the models trained on their data, their privacy requests, and what serving
    holds (fresh interactions in memory, their recommendations now)."""
    pseudonym = pseudonymise(user_id, services.settings.pseudonym_key)
    held = await run_in_threadpool(export.user_data, services.lake, pseudonym)
    in_memory = services.speed_view.interactions(pseudonym)
    found = held is not None or bool(in_memory)
    await audit_trail.record(services, audit_trail.entry(http, "user.export", "ok" if found else "not_found", pseudonym))
    if not found:
        raise HTTPException(404, detail=f"nothing is held on user_id {user_id!r}")
    answer = services.recommend(pseudonym, rec.Query())
    return {"user_id": user_id, **(held or {"pseudonym": pseudonym}), "serving": export.jsonable({
        "speed_interactions": [asdict(i) for i in in_memory],
        "recommendations": {"strategy": answer.strategy, "model_version": answer.model_version,
                            "items": [{"item_id": s.item_id, "score": s.score} for s in answer.items]},
    })}


def _receipt_read(http: Request, outcome: str, request_id: str, subject: str | None = None) -> Entry:
    """The audit row of a receipt read, on the subject hash the request log keeps (the pseudonym may be gone)."""
    return audit_trail.entry(http, "erasure.read", outcome, detail=f"request {request_id}", subject=subject)
