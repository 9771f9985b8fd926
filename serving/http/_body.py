"""Reading request bodies within the configured limit, and handing them to the data plane."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from serving.codecs import Bounds, DecodeError
from serving.errors import PayloadTooLarge
from serving.http._dataplane import DataPlane, Decode, Scored
from serving.registry import Registry

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``max_payload_bytes``: a declared
    Content-Length over the limit is refused before a byte is read."""
    limit: int = request.app.state.settings.max_payload_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise DecodeError("request", f"Content-Length {declared!r} is not a byte count")
        if int(declared) > limit:
            raise PayloadTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def parsed(request: Request, model: type[M]) -> M:
    """The JSON body as ``model`` (an empty body is ``{}``). Read by the route, not by FastAPI
    from its signature: FastAPI reads a declared body before the auth dependency runs, and
    without a limit; this reads it after, within ``max_payload_bytes``."""
    body = await read_body(request)
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as err:
        raise invalid_body(err) from None


def invalid_body(err: ValidationError) -> RequestValidationError:
    """A body's validation errors as FastAPI's (422, each naming its field)."""
    errors = err.errors(include_url=False)
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors])


def json_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """The OpenAPI request body (``openapi_extra``) of a route that reads ``model`` with
    :func:`parsed`."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": required, "content": {"application/json": schema}}}


def decode_bounds(request: Request) -> Bounds:
    """A real-time request's decode bounds: the settings', and its timeout from now (a
    decode still going when the client has had its 504 stops)."""
    settings = request.app.state.settings
    return Bounds.of(settings, settings.request_timeout_s)


def registry_of(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


async def score(
    request: Request,
    ref: str,
    decode: Decode,
    body_bytes: int,
    as_rows: bool = False,
) -> Scored:
    """Score the rows ``decode(features)`` gives with the model ``ref``, through the
    data plane (load on first use, limits, micro-batching). What it learns about the
    request (model, rows, cold start) goes to ``request.state`` for headers, metrics and logs."""
    dataplane: DataPlane = request.app.state.dataplane
    scored = await dataplane.predict(ref, decode, body_bytes, as_rows)
    version = scored.predictor.version
    # One update of the middleware's dict, not a State.__setattr__ a field (~0.15 us each).
    request.scope.setdefault("state", {}).update(
        model=(version.name, version.version),
        rows=scored.table.num_rows,
        load_seconds=scored.load_seconds,
    )
    return scored
