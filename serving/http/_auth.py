"""Who may call what: the admin token for management routes, the API key for predict routes.

Both are FastAPI dependencies. Secrets are compared in constant time (``hmac.compare_digest``)
so a wrong guess takes as long as a nearly right one. The security schemes below also put the
routes' requirements in the OpenAPI spec.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.exceptions import HTTPException

from serving.errors import ManagementDisabled, Unauthorized
from serving.settings import Settings

_admin_bearer = HTTPBearer(
    scheme_name="AdminToken",
    description="`Authorization: Bearer <MMSERVE_ADMIN_TOKEN>` (management routes)",
    auto_error=False,
)
_key_bearer = HTTPBearer(
    scheme_name="APIKeyBearer",
    description="`Authorization: Bearer <MMSERVE_API_KEY>` (predict routes)",
    auto_error=False,
)
_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="APIKey",
    description="`X-API-Key: <MMSERVE_API_KEY>` (predict routes)",
    auto_error=False,
)

Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)]
KeyBearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_key_bearer)]
KeyHeader = Annotated[str | None, Depends(_key_header)]


async def require_admin(request: Request, bearer: Bearer) -> None:
    """Management routes: off (403) unless ``MMSERVE_ADMIN_TOKEN`` is set, then they need
    ``Authorization: Bearer <token>`` (401 otherwise)."""
    token = _settings(request).admin_token
    if token is None:
        raise ManagementDisabled("MMSERVE_ADMIN_TOKEN")
    if not _matches(bearer.credentials if bearer else None, token):
        raise _challenge(Unauthorized("admin token", "'Authorization: Bearer <token>'"))


async def require_api_key(request: Request, bearer: KeyBearer, header: KeyHeader) -> None:
    """Predict routes: open unless ``MMSERVE_API_KEY`` is set, then they need the key in
    ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (401 otherwise)."""
    key = _settings(request).api_key
    if key is None:
        return
    if not (_matches(bearer.credentials if bearer else None, key) or _matches(header, key)):
        raise _challenge(
            Unauthorized("API key", "'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        )


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _matches(given: str | None, secret: SecretStr) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())


def _challenge(err: Unauthorized) -> HTTPException:
    """``err`` as the exception the app renders ``{"error": message}`` with headers from:
    a 401 must say how to authenticate (``WWW-Authenticate``, RFC 9110), and the handler
    of the error tree sends no headers."""
    return HTTPException(err.status, err.message, headers={"WWW-Authenticate": "Bearer"})
