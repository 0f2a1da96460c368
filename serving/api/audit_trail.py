"""Serving's rows in the audit log (``lambdarec.audit``): who acted comes from the request's API key.

An audited action has happened by the time its row is written (a consent change
the broker took, an erasure recorded), so a row that cannot be committed does not
undo it or fail the answer, which the client would retry: it is logged and counted
(``lambdarec_audit_failures_total``).
"""

from __future__ import annotations

import logging

from fastapi import Request

from lambdarec import audit
from serving.services import Services

log = logging.getLogger(__name__)


def entry(request: Request, action: str, outcome: str, pseudonym: str | None = None, detail: str = "",
          subject: str | None = None) -> audit.Entry:
    """The row for ``action`` by the request's key (None in open mode) on the user ``pseudonym`` (hashed here),
    or on ``subject`` where the caller holds only the subject hash."""
    return audit.Entry(action=action, outcome=outcome, key_id=getattr(request.state, "key_id", None),
                       subject=audit.subject_of(pseudonym) if pseudonym is not None else subject, detail=detail)


async def record(services: Services, row: audit.Entry) -> None:
    """Await the group commit that carries ``row`` (async routes)."""
    try:
        await services.audit.record(row)
    except Exception as exc:
        _failed(services, row, exc)


def record_blocking(services: Services, row: audit.Entry) -> None:
    """Wait for the group commit that carries ``row`` (sync routes, on their worker thread)."""
    try:
        services.audit.submit(row).result()
    except Exception as exc:
        _failed(services, row, exc)


def _failed(services: Services, row: audit.Entry, exc: Exception) -> None:
    services.metrics.audit_failures.inc()
    log.error("audit row lost", extra={"action": row.action, "outcome": row.outcome, "audit_id": row.audit_id,
                                       "error": repr(exc)})
