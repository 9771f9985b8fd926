"""The fast lane's server span: what FastAPI's telemetry makes for the requests it sees, made
for those the lane answers past it (:mod:`serving.http._fastlane`).

The same name (``POST /v1/models/{ref}:predict``), kind and attributes as FastAPI's
(``http.route``, ``http.request.method``, ``http.response.status_code``, ``url.*``,
``server.*``, ``error.type`` for a 5xx), the parent the request's ``traceparent`` names, and
what the lane learnt: the model, its version and the rows scored (:mod:`serving.tracing`).
Made only when tracing is on: off, the lane does not come here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi.routing import APIRoute
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from starlette.datastructures import Headers
from starlette.types import Message, Scope, Send

from serving import tracing

Call = Callable[[Send], Awaitable[None]]


async def traced(tracer: Tracer, route: APIRoute, scope: Scope, call: Call, send: Send) -> None:
    """``call(send)`` inside the request's server span."""
    headers = Headers(scope=scope)
    method = scope["method"]
    span = tracer.start_span(
        f"{method} {route.path_format}",
        context=propagate.extract(headers),
        kind=SpanKind.SERVER,
        attributes=_request_attributes(scope, headers, method, route.path_format),
    )
    status: int | None = None

    async def sending(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    error: BaseException | None = None
    try:
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            await call(sending)
    except BaseException as err:
        error = err
        raise
    finally:
        span.set_attributes(_answer_attributes(scope.get("state", {}), status, error))
        if error is not None or status is None or status >= 500:
            span.set_status(StatusCode.ERROR)
        span.end()


def _request_attributes(scope: Scope, headers: Headers, method: str, route: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "url.scheme": scope.get("scheme", "http"),
        "http.request.method": method,
        "http.route": route,
        "url.path": scope["path"],
    }
    if scope.get("http_version"):
        attributes["network.protocol.version"] = scope["http_version"]
    return attributes | _server(scope, headers)


def _server(scope: Scope, headers: Headers) -> dict[str, Any]:
    """``server.address`` and ``server.port``: the ``Host`` the client asked for, else the
    socket's."""
    host = headers.get("host")
    address, port = scope.get("server") or (None, None)
    if host is not None:
        try:
            found = urlsplit(f"//{host}")
            address, port = found.hostname, found.port
        except ValueError:
            return {}
        port = port or {"https": 443}.get(scope.get("scheme", "http"), 80)
    if address is None:
        return {}
    return {"server.address": address, "server.port": port} if port else {"server.address": address}


def _answer_attributes(
    state: dict[str, Any], status: int | None, error: BaseException | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if status is not None:
        attributes["http.response.status_code"] = status
    if error is not None:
        attributes["error.type"] = type(error).__qualname__
    elif status is None or status >= 500:
        attributes["error.type"] = str(status or "incomplete_response")
    if "model" in state:
        model, version = state["model"]
        attributes |= tracing.model_attributes(model, version, state.get("rows"))
    return attributes
