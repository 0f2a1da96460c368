"""Bearer-token guard for the admin routes.

No header: 401 (with ``WWW-Authenticate``); a wrong token, or admin routes off
because no token is configured: 403. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.deps import Services, get_services

bearer = HTTPBearer(auto_error=False, description="The admin token (settings: admin_token).")


async def require_admin(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    services: Annotated[Services, Depends(get_services)],
) -> None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, detail="admin routes need an Authorization: Bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    expected = services.settings.admin_token.get_secret_value().encode()
    given = credentials.credentials.encode()
    if not expected or not hmac.compare_digest(given, expected):
        raise HTTPException(403, detail="the bearer token is not the admin token")
