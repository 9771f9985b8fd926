"""Who may call what: the admin token for management routes, the API key for the rest.

- ``MMSERVE_ADMIN_TOKEN``: management routes (load, unload, aliases) are off (403) without
  it, and need ``Authorization: Bearer <token>`` with it (401 otherwise). A FastAPI
  dependency of those routes, so the spec states it.
- ``MMSERVE_API_KEY``: when set, every route but health, metrics and the docs needs the key
  (``Authorization: Bearer <key>`` or ``X-API-Key: <key>``) or the admin token. Checked by
  the request middleware before routing: on the predict path a dependency would cost more
  than the rest of the check. The spec states it as the API's default security.

Secrets are compared in constant time (``hmac.compare_digest``), so a wrong guess takes as
long as a nearly right one. :func:`credential` names which one a request carried (``admin``,
``api-key`` or ``none``): what an async job's idempotency key is scoped by. There is one
secret of each kind, so the name is the credential, and no secret (nor a hash of one, which
could be guessed offline) is ever written to the store.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.exceptions import HTTPException

from serving.errors import ManagementDisabled, Unauthorized
from serving.settings import Settings

# Paths anyone may call, key or not: probes (``/`` is KServe V1's), metrics, the docs and
# the console's pages (which hold no data: they ask for a token to read any) with what it
# asks first, which credential a request carries.
OPEN_PATHS = frozenset(
    [
        "/",
        "/ping",
        "/v2",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/redoc",
        "/ui",
        "/v1/console/session",
    ]
)
OPEN_PREFIXES = ("/v2/health/", "/docs/", "/ui/")

NO_KEY = Unauthorized("API key", "'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
SECURITY_SCHEMES: dict[str, Any] = {
    "APIKeyBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <MMSERVE_API_KEY>`",
    },
    "APIKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "`X-API-Key: <MMSERVE_API_KEY>`",
    },
}

_admin_bearer = HTTPBearer(
    scheme_name="AdminToken",
    description="`Authorization: Bearer <MMSERVE_ADMIN_TOKEN>` (management routes)",
    auto_error=False,
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)]


async def require_admin(request: Request, bearer: Bearer) -> None:
    """Management routes: off (403) unless ``MMSERVE_ADMIN_TOKEN`` is set, then they need
    ``Authorization: Bearer <token>`` (401 otherwise)."""
    settings: Settings = request.app.state.settings
    try:
        check_admin(bearer.credentials if bearer else None, settings)
    except Unauthorized as err:
        raise _challenge(err) from None


def check_admin(given: str | None, settings: Settings) -> None:
    """The admin token check of every protocol, ``given`` the bearer token a caller sent:
    :class:`ManagementDisabled` without ``MMSERVE_ADMIN_TOKEN``, :class:`Unauthorized` for a
    missing or wrong token."""
    if settings.admin_token is None:
        raise ManagementDisabled("MMSERVE_ADMIN_TOKEN")
    if not _matches(given, settings.admin_token):
        raise Unauthorized("admin token", "'Authorization: Bearer <token>'")


def needs_key(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


def has_key(headers: list[tuple[bytes, bytes]], settings: Settings) -> bool:
    """Whether the raw request headers carry the API key (or the admin token)."""
    return credential(headers, settings) != NONE


ADMIN, API_KEY, NONE = "admin", "api-key", "none"


def credential(headers: list[tuple[bytes, bytes]], settings: Settings) -> str:
    """Which secret the raw request headers carry: ``admin`` (the admin token, which also
    passes for the key), ``api-key``, or ``none`` (neither, or none is set)."""
    given = list(_presented(headers))
    for name, secret in ((ADMIN, settings.admin_token), (API_KEY, settings.api_key)):
        if secret is not None and any(_matches(g, secret) for g in given):
            return name
    return NONE


def bearer_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of the raw headers' ``Authorization: Bearer <token>``, if they have one."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return given
    return None


def _presented(headers: list[tuple[bytes, bytes]]) -> Iterator[str]:
    """The secrets a request presents: ``X-API-Key`` and ``Authorization: Bearer`` values."""
    for name, value in headers:
        if name == b"x-api-key":
            yield value.decode("latin-1")
        elif name == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                yield given


def _matches(given: str | None, secret: SecretStr) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())


def _challenge(err: Unauthorized) -> HTTPException:
    """``err`` as the exception the app renders ``{"error": message}`` with headers from:
    a 401 must say how to authenticate (``WWW-Authenticate``, RFC 9110)."""
    return HTTPException(err.status, err.message, headers={"WWW-Authenticate": "Bearer"})
