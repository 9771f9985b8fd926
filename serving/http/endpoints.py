"""Endpoint routes: an endpoint's variants answer in SageMaker's, V1's and V2's shapes.

- ``POST /v1/endpoints/{name}/invocations`` (and SageMaker runtime's
  ``/endpoints/{name}/invocations``): CSV, JSON, JSON lines, parquet or Arrow bodies;
- ``POST /v1/endpoints/{name}:predict`` (V1 bodies), ``POST /v2/endpoints/{name}/infer`` (V2);
- ``POST /v1/endpoints/{name}/async``: an async job for the variant drawn for it;
- ``GET /v1/endpoints``, ``GET /v1/endpoints/{name}`` (admin token): config, live state,
  per-variant figures;
- ``POST /v1/endpoints:reload`` (admin token): apply the endpoints file again;
- ``DELETE /v1/endpoints/{name}`` (admin token): delete an endpoint.

``X-Target-Variant`` (or SageMaker's ``X-Amzn-SageMaker-Target-Variant``) pins a variant.
Every answer names its variant (``X-Amzn-Invoked-Production-Variant``, ``X-MMServe-Variant``),
the model version(s) that answered (``X-MMServe-Model``) and the inference id
(``X-Inference-Id``: the caller's ``X-Amzn-SageMaker-Inference-Id``/``X-Inference-Id``, else
a new one), under which the request is captured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from serving import codecs, scorers
from serving.codecs import Rows
from serving.codecs import v1 as v1_codec
from serving.codecs import v2 as v2_codec
from serving.endpoints.catalog import Served
from serving.endpoints.state import percentages
from serving.errors import MMServeError
from serving.http import _openapi, jobs, sagemaker
from serving.http._auth import require_admin
from serving.http._body import decode_bounds, read_body
from serving.http._dataplane import Decode, off_loop_if_large
from serving.http._endpoints import Answer, EndpointPlane
from serving.http._errors import error_response
from serving.http._follow import Follower
from serving.metadata import Feature, names

router = APIRouter(tags=["endpoints"])


def plane_of(request: Request) -> EndpointPlane:
    plane: EndpointPlane = request.app.state.endpoints
    return plane


@router.post(
    "/v1/endpoints/{name}/invocations",
    summary="Invoke an endpoint (SageMaker bodies)",
    openapi_extra=_openapi.SAGEMAKER_ENDPOINT_INVOCATIONS,
    responses=_openapi.SAGEMAKER_RESPONSES,
)
@router.post(
    "/endpoints/{name}/invocations",
    summary="Invoke an endpoint (SageMaker runtime)",
    openapi_extra=_openapi.SAGEMAKER_ENDPOINT_INVOCATIONS,
    responses=_openapi.SAGEMAKER_RESPONSES,
)
async def invocations(name: str, request: Request) -> Response:
    """Score the body with the variant drawn (or pinned) for it; errors are SageMaker's. A
    name no endpoint is applied under is a model's (:func:`sagemaker.as_model`)."""
    try:
        if (model := await sagemaker.as_model(request, name)) is not None:
            return model
        body = await read_body(request)
        decode, kind = sagemaker.body_decoder(request, body)
        answer = await _invoke(request, name, decode, len(body))
        version = answer.predictors[-1].version
        content, accept = sagemaker.answer_of(request, answer.table, version, kind)
    except MMServeError as err:
        return _failed(request, err)
    return _respond(request, answer, decode, len(body), content, {"content-type": accept})


@router.post(
    "/v1/endpoints/{name}:predict",
    summary="Predict with an endpoint (V1 bodies)",
    openapi_extra=_openapi.V1_PREDICT,
    responses=_openapi.V1_RESPONSES,
)
async def predict(name: str, request: Request) -> Response:
    try:
        return await _predict(name, request)
    except MMServeError as err:
        return _failed(request, err)


async def _predict(name: str, request: Request) -> Response:
    kind = v1_codec.body_type(request.headers.get("content-type"))
    body = await read_body(request)
    if kind == codecs.ARROW:
        bounds = decode_bounds(request)
        decode: Decode = lambda _: codecs.decode(body, codecs.ARROW, bounds)  # noqa: E731
    else:
        decode = lambda features: v1_codec.decode(body, names(features))  # noqa: E731
    answer = await _invoke(request, name, decode, len(body))
    if codecs.ARROW in request.headers.get("accept", ""):
        content, media_type = codecs.encode(answer.table, codecs.ARROW), codecs.ARROW
    else:
        content, media_type = v1_codec.encode(answer.table, *answer.last), codecs.JSON
    return _respond(request, answer, decode, len(body), content, {"content-type": media_type})


@router.post(
    "/v2/endpoints/{name}/infer",
    summary="Infer with an endpoint (Open Inference Protocol)",
    openapi_extra=_openapi.V2_INFER,
    responses=_openapi.V2_RESPONSES,
)
async def infer(name: str, request: Request) -> Response:
    try:
        return await _infer(name, request)
    except MMServeError as err:
        return _failed(request, err)


async def _infer(name: str, request: Request) -> Response:
    body = await read_body(request)
    decoded = await off_loop_if_large(
        len(body), v2_codec.decode, body, request.headers.get(v2_codec.HEADER_LENGTH)
    )

    def decode(features: list[Feature]) -> Rows:
        return v2_codec.to_rows(decoded, names(features), v2_codec.declared(features))

    answer = await _invoke(request, name, decode, len(body))
    shapes = answer.predictors[-1].version.output_shapes
    content, headers = v2_codec.encode(answer.table, decoded.request, *answer.last, shapes)
    return _respond(request, answer, decode, len(body), content, headers)


@router.post(
    "/v1/endpoints/{name}/async", status_code=202, summary="Submit an async job to an endpoint"
)
async def submit_async(name: str, request: Request) -> Response:
    """An async job (as ``POST /v1/models/{ref}/async`` takes it) for the variant drawn (or
    pinned) for it, its version pinned now; a pipeline variant's job is scored by its chain
    of models (each step's version pinned now)."""
    _, variant, refs = await plane_of(request).choose(name, request.headers)
    # An idempotent resend names the same endpoint, whichever variant is drawn for it.
    response = await jobs.submit_as(scorers.join(refs), f"endpoint {name}", request)
    response.headers.update(_variant_headers(variant.name))
    return response


_ADMIN = [Depends(require_admin)]


@router.get("/v1/endpoints", summary="Endpoints this server serves", dependencies=_ADMIN)
async def list_endpoints(request: Request) -> dict[str, Any]:
    plane = plane_of(request)
    return {"endpoints": [_summary(s) for _, s in sorted(plane.snapshot.items())]}


@router.get(
    "/v1/endpoints/{name}",
    summary="An endpoint: config, live state, variants' figures",
    dependencies=_ADMIN,
)
async def describe(name: str, request: Request) -> dict[str, Any]:
    plane = plane_of(request)
    return described(plane, await plane.served(name))


def described(plane: EndpointPlane, served: Served) -> dict[str, Any]:
    """An endpoint's config, live state and this process's figures of each variant."""
    view = _summary(served)
    view["config"] = served.config.model_dump(mode="json", exclude_none=True)
    view["state"] = served.state.model_dump(mode="json")
    for variant in view["variants"]:
        stats = plane.stats.get((served.name, variant["name"]))
        variant["stats"] = stats.view() if stats is not None else None
    return view


@router.delete(
    "/v1/endpoints/{name}",
    summary="Delete an endpoint",
    dependencies=_ADMIN,
    responses={
        409: _openapi.error(
            "A rollout runs on the endpoint.",
            "endpoint 'churn' is in a rollout (variant to green): wait for it, or end it with "
            "`mmserve endpoints rollback churn`",
        )
    },
)
async def delete(name: str, request: Request) -> dict[str, list[str]]:
    """Delete the endpoint (409 while a rollout runs on it): this server stops serving it at
    once, the others at their next read of the store (``MMSERVE_DEPLOYMENT__STATE_TTL_S``).
    Its captured traffic stays. One the endpoints file declares comes back when the file is
    applied again. Answers the endpoints left."""
    plane = plane_of(request)
    await run_in_threadpool(plane.endpoints.delete, name)
    follower: Follower = request.app.state.endpoint_follower
    await follower.refresh()  # what this server serves now, whatever a read under way finds
    return {"endpoints": sorted(plane.snapshot)}


@router.post(
    "/v1/endpoints:reload",
    summary="Apply the endpoints file again",
    dependencies=_ADMIN,
    responses={
        400: _openapi.error(
            "MMSERVE_ENDPOINTS names no file, or the file is refused (its line and reason).",
            "endpoints.yaml line 4: weights must add up to 100",
        )
    },
)
async def reload(request: Request) -> dict[str, Any]:
    """Apply ``MMSERVE_ENDPOINTS`` again (400 naming the line and reason when it is bad; the
    endpoints applied before keep serving), then read the endpoints from the store."""
    follower: Follower = request.app.state.endpoint_follower
    return await follower.reload()


async def _invoke(request: Request, name: str, decode: Decode, body_bytes: int) -> Answer:
    plane = plane_of(request)
    served, variant, refs = await plane.choose(name, request.headers)
    request.state.variant = (variant.name, plane.label(refs))  # named in answers, failed or not
    answer = await plane.invoke(served, variant, refs, request.headers, decode, body_bytes)
    request.scope.setdefault("state", {}).update(  # one update, not a State.__setattr__ a field
        model=answer.last, rows=answer.table.num_rows, load_seconds=answer.load_seconds
    )
    return answer


def _respond(
    request: Request,
    answer: Answer,
    decode: Decode,
    body_bytes: int,
    content: bytes,
    headers: dict[str, str],
) -> Response:
    plane = plane_of(request)
    headers = {
        **headers,
        **_variant_headers(answer.variant.name),
        "x-mmserve-model": answer.model,
        "x-inference-id": answer.inference_id,
    }
    return _ThenResponse(content, headers, lambda: plane.after(answer, decode, body_bytes))


def _failed(request: Request, err: MMServeError) -> Response:
    """The error's answer, naming the variant that failed when one was chosen."""
    response = error_response(request, err)
    chosen = getattr(request.state, "variant", None)
    if chosen is not None:
        response.headers.update({**_variant_headers(chosen[0]), "x-mmserve-model": chosen[1]})
    return response


def _variant_headers(variant: str) -> dict[str, str]:
    return {"x-amzn-invoked-production-variant": variant, "x-mmserve-variant": variant}


def _summary(served: Served) -> dict[str, Any]:
    shares = percentages(served.state.weights)
    rollout = served.state.rollout
    return {
        "name": served.name,
        "mode": served.config.mode,
        "variants": [
            {
                "name": v.name,
                "models": v.steps,
                "weight": served.state.weights.get(v.name, 0.0),
                "share": shares.get(v.name, 0.0),
            }
            for v in served.config.production_variants
        ],
        "shadow": served.config.shadow.model if served.config.shadow else None,
        "rollout": rollout.model_dump(mode="json") if rollout else None,
        "last_decision": served.state.last.model_dump(mode="json") if served.state.last else None,
        "generation": served.state.generation,
    }


class _ThenResponse(Response):
    """A response that runs ``then()`` once it is sent: the shadow and the capture start
    after the caller has its answer, and are not timed as part of the request."""

    def __init__(self, content: bytes, headers: dict[str, str], then: Callable[[], None]):
        super().__init__(content, headers=headers)
        self._then = then

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
        self._then()
