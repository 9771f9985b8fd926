"""What every request gets: an id (``X-Request-ID``), the API-key check, metrics, a
structured access log, the cold-start headers of a request that waited for its model, and
with tracing on, the server span of a request the fast lane answers.

A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` would cost more per request
than the rest of this module.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import secrets
import time
from contextvars import ContextVar
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import tracing
from serving.http._auth import NO_KEY, has_key, needs_key
from serving.http._fastlane import FastLane
from serving.http._metrics import Metrics
from serving.http._tracing import traced
from serving.settings import Settings

REQUEST_ID = "x-request-id"
COLD_START = "x-mmserve-cold-start"
LOAD_SECONDS = "x-mmserve-load-seconds"
STALE_SECONDS = "x-mmserve-stale-seconds"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_log = logging.getLogger("mmserve.access")

# The state of the request being answered, for what learns something about its answer deep
# in the data plane (a resolution served stale) without a request object at hand.
_request_state: ContextVar[dict[str, Any] | None] = ContextVar("request_state", default=None)


def note_stale(seconds: float) -> None:
    """The answer of the current request comes from a model reference the store has not
    confirmed for ``seconds`` (it is away): said in ``X-MMServe-Stale-Seconds``."""
    state = _request_state.get()
    if state is not None:
        state["stale_s"] = max(seconds, state.get("stale_s", 0.0))


class RequestContext:
    """Request id, timing, per-route metrics and the access log around the app."""

    def __init__(self, app: ASGIApp, metrics: Metrics, settings: Settings, lane: FastLane):
        self.app = app
        self.metrics = metrics
        self.settings = settings
        self.lane = lane
        self.tracer = tracing.tracer(settings)  # None when off: the lane as if it did not exist

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = _request_state.set(state)
        status = 500  # if the app fails before it answers

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                headers.append((REQUEST_ID.encode(), request_id.encode()))
                load_seconds = state.get("load_seconds")
                if load_seconds is not None:
                    headers.append((COLD_START.encode(), b"true"))
                    headers.append((LOAD_SECONDS.encode(), f"{load_seconds:.6f}".encode()))
                stale_s = state.get("stale_s")
                if stale_s is not None:
                    headers.append((STALE_SECONDS.encode(), f"{stale_s:.3f}".encode()))
            await send(message)

        try:
            if self.settings.api_key is not None and _refused(scope, self.settings):
                await _unauthorized(scope, receive, send_with_headers)
            elif (route := self.lane.match(scope)) is not None:
                if self.tracer is None:
                    await self.lane.handle(route, scope, receive, send_with_headers)
                else:
                    lane = functools.partial(self.lane.handle, route, scope, receive)
                    await traced(self.tracer, route, scope, lane, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            _request_state.reset(token)
            self._record(scope, state, status, time.perf_counter() - started)

    def _record(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        model, version = state.get("model", ("", ""))
        self.metrics.observe_request(route, model, version, status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": state["request_id"],
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "ms": round(seconds * 1000, 3),
                "model": model or None,
                "version": version or None,
                "cold_start": state.get("load_seconds") is not None,
            }
            access_log.info(
                "%s %s %s", scope["method"], scope["path"], status, extra={"fields": fields}
            )


def _refused(scope: Scope, settings: Settings) -> bool:
    return needs_key(scope["path"]) and not has_key(scope["headers"], settings)


async def _unauthorized(scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        {"error": NO_KEY.message}, NO_KEY.status, headers={"WWW-Authenticate": "Bearer"}
    )
    await response(scope, receive, send)


def _request_id(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` if it is a sane token, else a new one: this process's
    random prefix and a counter (unique, and cheaper than a uuid4 per request)."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _VALID_ID.match(text):
                return text
    return f"{_PREFIX}{next(_COUNTER):016x}"


_PREFIX = secrets.token_hex(8)
_COUNTER = itertools.count()
