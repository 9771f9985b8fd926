"""SageMaker's multi-model endpoint container contract: ``GET|POST /models``,
``GET|DELETE /models/{name}``, ``POST /models/{name}/invoke``.

Loading, unloading and listing need the admin token (off without one). ``invoke`` predicts,
like ``/invocations`` (the API key), but only with a name ``POST /models`` loaded: any other
name is 404, as the contract says, and never loads a model, so which models take memory is
the admin's choice. A multi-model endpoint's ``model_name`` is SageMaker's opaque key: it is
kept with the version its ``url`` (a model reference; empty means ``model_name`` itself)
resolved to when loaded. That bookkeeping is per server process, like the cache. The cache
may drop the version later (LRU, idle eviction): the name stays listed and its next invoke
loads it again, as SageMaker expects of a model it was told is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from serving.errors import ModelAlreadyLoaded, ModelNotLoaded
from serving.http import _openapi, sagemaker
from serving.http._auth import require_admin
from serving.http._body import json_body, parsed, registry_of
from serving.refs import validate_name

router = APIRouter()
_ADMIN = [Depends(require_admin)]
Key = tuple[str, int]  # a cache key: (name, version)


def _ref(key: Key) -> str:
    return f"{key[0]}:{key[1]}"


@dataclass
class _Endpoint:
    """The multi-model endpoint's bookkeeping: ``model_name`` -> the version loaded for it."""

    loaded: dict[str, Key] = field(default_factory=dict)
    loading: dict[str, str] = field(default_factory=dict)  # model_name -> reference asked


def _endpoint(request: Request) -> _Endpoint:
    # Only touched on the event loop thread, so needs no lock.
    state = request.app.state
    if not hasattr(state, "multi_model_endpoint"):
        state.multi_model_endpoint = _Endpoint()
    endpoint: _Endpoint = state.multi_model_endpoint
    return endpoint


class LoadModelRequest(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    model_name: str
    """SageMaker's key for the model; later routes name it in their path."""
    url: str = ""
    """A model reference (``churn``, ``churn:3``, ``churn@staging``); empty: ``model_name``."""


class LoadedModel(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    modelName: str
    modelUrl: str
    """The version loaded, as ``name:version``."""


class LoadedModels(BaseModel):
    models: list[LoadedModel]
    nextPageToken: str | None = None


def _described(name: str, key: Key) -> LoadedModel:
    return LoadedModel(modelName=name, modelUrl=_ref(key))


@router.get(
    "/models",
    tags=["sagemaker"],
    summary="List loaded models (SageMaker)",
    dependencies=_ADMIN,
    response_model_exclude_none=True,
)
async def list_loaded(
    request: Request,
    next_page_token: str | None = None,
    max_results: Annotated[int | None, Query(ge=1)] = None,
) -> LoadedModels:
    """The loaded models by name; with ``max_results``, a page of them and the
    ``nextPageToken`` to pass as ``next_page_token`` for the next."""
    loaded = _endpoint(request).loaded
    names = sorted(n for n in loaded if next_page_token is None or n > next_page_token)
    page = names[:max_results] if max_results else names
    token = page[-1] if len(page) < len(names) else None
    return LoadedModels(models=[_described(n, loaded[n]) for n in page], nextPageToken=token)


@router.post(
    "/models",
    tags=["sagemaker"],
    summary="Load a model (SageMaker)",
    dependencies=_ADMIN,
    openapi_extra=json_body(LoadModelRequest),
)
async def load(request: Request) -> LoadedModel:
    """Load the model ``url`` names and keep it as ``model_name``: 409 if that name is
    loaded, 404 for an unknown model, 507 for one bigger than the whole model cache."""
    body = await parsed(request, LoadModelRequest)
    name = validate_name(body.model_name, "model_name")
    ref = body.url or name
    endpoint = _endpoint(request)
    if name in endpoint.loaded:
        raise ModelAlreadyLoaded(name, _ref(endpoint.loaded[name]))
    if name in endpoint.loading:
        raise ModelAlreadyLoaded(name, endpoint.loading[name])
    endpoint.loading[name] = ref
    try:
        predictor = await run_in_threadpool(registry_of(request).load, ref)
    finally:
        del endpoint.loading[name]
    key = (predictor.version.name, predictor.version.version)
    endpoint.loaded[name] = key
    return _described(name, key)


@router.get(
    "/models/{name}",
    tags=["sagemaker"],
    summary="Describe a loaded model (SageMaker)",
    dependencies=_ADMIN,
)
async def describe_loaded(name: str, request: Request) -> LoadedModel:
    """The loaded model ``name``; 404 if it is not loaded."""
    key = _endpoint(request).loaded.get(name)
    if key is None:
        raise ModelNotLoaded(name)
    return _described(name, key)


@router.delete(
    "/models/{name}", tags=["sagemaker"], summary="Unload a model (SageMaker)", dependencies=_ADMIN
)
async def unload(name: str, request: Request) -> dict[str, Any]:
    """Unload the model ``name``; 404 if it is not loaded. Its version leaves the cache
    unless another loaded name holds it too."""
    loaded = _endpoint(request).loaded
    key = loaded.pop(name, None)
    if key is None:
        raise ModelNotLoaded(name)
    if key not in loaded.values():
        registry_of(request).cache.discard(key)
    return {}


@router.post(
    "/models/{name}/invoke",
    tags=["sagemaker"],
    summary="Invoke a loaded model (SageMaker multi-model endpoint)",
    openapi_extra={"requestBody": _openapi.SAGEMAKER_INVOCATIONS["requestBody"]},
    responses=_openapi.SAGEMAKER_RESPONSES,
)
async def invoke(name: str, request: Request) -> Response:
    """``/invocations`` with the version loaded as ``name`` as target (loaded again if the
    cache dropped it); 404 for a name that is not loaded."""
    key = _endpoint(request).loaded.get(name)
    if key is None:
        raise ModelNotLoaded(name)
    return await sagemaker.invocations(_targeting(request, _ref(key)))


def _targeting(request: Request, ref: str) -> Request:
    """``request`` with its target-model header set to ``ref``: /invocations reads its target
    from there, so this route reuses it whole (formats, Accept, SageMaker's error codes)."""
    target = sagemaker.TARGET_MODEL.encode()
    headers = [(k, v) for k, v in request.scope["headers"] if k != target]
    request.scope.setdefault("state", {})  # shared: what scoring learns reaches the middleware
    scope = {**request.scope, "headers": [*headers, (target, ref.encode())]}
    return Request(scope, request.receive)
