"""Who may call what: API keys with scopes, checked on every route that changes or reveals a user's data.

A route's router declares the scope it needs (``Depends(READ)``); the guard reads
``Authorization: Bearer <token>``, finds the live key in the services' ``KeyRing``
and compares the token's hash in constant time. No key, or an unknown or revoked
one: 401 with ``WWW-Authenticate: Bearer``. A live key without the scope: 403.
Both bodies name the scope the route needs. A request that passes carries
``request.state.key_id`` and ``request.state.scopes`` (the rate limiter's bucket).

/health, /ready, /metrics and the dashboard stay open: they reveal no user's data.

In ``auth=open`` mode no credential is checked (``key_id`` is None); serving runs
it only on a loopback address (``check_startup``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.responses import JSONResponse
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, Field

from lambdarec.api_keys import SCOPES, KeyRing, Scope, key_id_of
from lambdarec.lake import Lake
from lambdarec.settings import Settings, is_loopback

log = logging.getLogger(__name__)
SCHEME = "ApiKey"


class AuthRefusal(BaseModel):
    detail: str = Field(description="Why the request was refused.")
    required_scope: Scope = Field(description="The scope this route needs (lambdarec keys create --scope ...).")


class AuthRefused(Exception):
    """A request refused for its credential: 401 (none that serving knows) or 403 (a key without the scope)."""

    def __init__(self, status_code: int, detail: str, scope: Scope, challenge: str):
        super().__init__(detail)
        self.status_code, self.detail, self.scope, self.challenge = status_code, detail, scope, challenge


async def refused(request: Request, exc: Exception) -> JSONResponse:
    """The refusal's answer: its status, a body naming the scope, and the Bearer challenge (RFC 6750)."""
    assert isinstance(exc, AuthRefused)
    services = request.app.state.services
    services.metrics.auth_refused.labels("no_key" if exc.status_code == 401 else "scope", exc.scope).inc()
    body = AuthRefusal(detail=exc.detail, required_scope=exc.scope)
    return JSONResponse(body.model_dump(), status_code=exc.status_code, headers={"WWW-Authenticate": exc.challenge})


class ScopeGuard(SecurityBase):
    """The dependency of the routes that need ``scope``; FastAPI lists it as the bearer scheme in OpenAPI."""

    def __init__(self, scope: Scope):
        self.scope = scope
        self.model = HTTPBearerModel(bearerFormat="lrk_<key_id>_<secret>",
                                     description="An API key from `lambdarec keys create`, with the route's scope.")
        self.scheme_name = SCHEME

    async def __call__(self, request: Request) -> None:
        services = request.app.state.services
        if services.settings.auth == "open":
            request.state.key_id, request.state.scopes = None, frozenset(SCOPES)
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthRefused(401, f"this route needs an API key with the {self.scope!r} scope: "
                              "send Authorization: Bearer <token>", self.scope, "Bearer")
        key = services.keys.authenticate(token.strip())
        if key is None and key_id_of(token.strip()) is not None and await run_in_threadpool(services.keys.reload_after_miss):
            key = services.keys.authenticate(token.strip())  # a key created since the last poll
        if key is None:
            raise AuthRefused(401, "the bearer token is not a live API key (unknown or revoked)", self.scope,
                              'Bearer error="invalid_token"')
        request.state.key_id, request.state.scopes = key.key_id, key.scopes
        if self.scope not in key.scopes:
            raise AuthRefused(403, f"key {key.key_id} lacks the {self.scope!r} scope this route needs", self.scope,
                              f'Bearer error="insufficient_scope", scope="{self.scope}"')


INGEST, CONSENT, READ, ADMIN = ScopeGuard("ingest"), ScopeGuard("consent"), ScopeGuard("read"), ScopeGuard("admin")


def responses(scope: Scope) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answers every route guarded by ``scope`` may give for its credential."""
    return {
        401: {"model": AuthRefusal, "description": "No bearer token, or one that is not a live API key."},
        403: {"model": AuthRefusal, "description": f"The API key lacks the {scope!r} scope."},
    }


class UnsafeAuth(RuntimeError):
    """Serving would answer a network without checking credentials."""


def check_startup(settings: Settings, host: str) -> None:
    """Refuse to serve ``host`` open, or with no live key, unless it is loopback; warn once when it is."""
    if settings.auth == "open":
        if not is_loopback(host):
            raise UnsafeAuth(f"auth=open checks no credential, so serving binds it only to loopback, not {host!r}: "
                             "set LAMBDAREC_AUTH=keys and create keys (`lambdarec keys create`), or bind 127.0.0.1")
        log.warning("auth=open: serving checks NO credential; anyone who can reach %s may change consent, read "
                    "recommendations and erase users. For development on this machine only.", host)
        return
    keys = KeyRing(Lake(settings))
    keys.reload()
    if not keys.live:
        if not is_loopback(host):
            raise UnsafeAuth(f"no live API key in {settings.lake_root}: serving on {host!r} would refuse every "
                             "protected route. Create one first: lambdarec keys create --name NAME --scope read ...")
        log.warning("no live API key yet: every protected route answers 401 until `lambdarec keys create`")
