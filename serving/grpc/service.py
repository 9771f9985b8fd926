"""``inference.GRPCInferenceService``: the Open Inference Protocol over gRPC, answered by the
same data plane, endpoint plane, registry and checks as the HTTP V2 routes.

Each RPC does what its HTTP route does: health and metadata, readiness that loads, inference
through the data plane (an applied endpoint's name by its endpoint: variants, shadow,
capture), the repository extension behind the admin token. Credentials travel as metadata,
as HTTP's headers: ``authorization: Bearer <token>`` (tritonclient's ``headers=``) or
``x-api-key``. Errors are the same errors, with the same messages, as gRPC status codes
(:mod:`serving.grpc._status`); a failure nobody foresaw is INTERNAL with an ``error-id``
trailer, its traceback only in the log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any

import grpc

import serving
from serving.codecs import v2
from serving.errors import MMServeError, ModelError
from serving.grpc import _proto, _status, _tensors
from serving.http import health, repository
from serving.http import v2 as v2_routes
from serving.http._auth import NO_KEY, bearer_of, check_admin, credential
from serving.http._auth import NONE as NO_CREDENTIAL
from serving.http._dataplane import DataPlane, off_loop_if_large
from serving.http._endpoints import EndpointPlane
from serving.http._metrics import Metrics

log = logging.getLogger("mmserve.grpc")

OPEN = frozenset(["ServerLive", "ServerReady", "ServerMetadata"])
"""RPCs anyone may call, API key or not (HTTP's probes and ``GET /v2``)."""
ADMIN = frozenset(["RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"])
"""RPCs that need the admin token (HTTP's ``/v2/repository/...``)."""


class Call:
    """One RPC: its metadata, the trailers its answer carries, and the model that answered
    (for the metrics). Built and read in the gRPC thread; the coroutine only fills it."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self.metadata = [
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)  # not a -bin key's bytes
        ]
        self.trailers: list[tuple[str, str]] = []
        self.model: tuple[str, object] = ("", "")

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.metadata)

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [(key.encode("latin-1"), value.encode("latin-1")) for key, value in self.metadata]


class Refused(Exception):
    """An RPC's end with a status other than OK: its code, message and trailers."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: list[tuple[str, str]]):
        super().__init__(message)
        self.code, self.message, self.trailers = code, message, trailers


class InferenceService:
    """The RPCs, over the server's data plane and endpoint plane."""

    def __init__(self, dataplane: DataPlane, endpoints: EndpointPlane, metrics: Metrics):
        self.dataplane = dataplane
        self.registry = dataplane.registry
        self.settings = dataplane.settings
        self.endpoints = endpoints
        self.metrics = metrics

    def handler(self, loop: asyncio.AbstractEventLoop) -> grpc.GenericRpcHandler:
        """Every RPC of :data:`serving.grpc._proto.METHODS`, (de)serialized by its messages
        in gRPC's threads, answered on ``loop`` (see :func:`_on_loop`)."""
        handlers = {}
        for method, (request, response) in _proto.METHODS.items():
            handlers[method] = grpc.unary_unary_rpc_method_handler(
                _on_loop(loop, self._guarded(method, getattr(self, method))),
                request_deserializer=_proto.message(request).FromString,
                response_serializer=_proto.message(response).SerializeToString,
            )
        return grpc.method_handlers_generic_handler(_proto.SERVICE, handlers)

    def _guarded(
        self, method: str, rpc: Callable[[Any, Call], Awaitable[Any]]
    ) -> Callable[[Any, Call], Coroutine[Any, Any, Any]]:
        """``rpc`` behind the credential check, its errors as :class:`Refused`, counted."""
        route = f"/{_proto.SERVICE}/{method}"

        async def handle(request: Any, call: Call) -> Any:
            started, status = time.perf_counter(), int(HTTPStatus.OK)
            try:
                self._authorize(method, call)
                return await rpc(request, call)
            except asyncio.CancelledError:  # the client went away, or its deadline passed
                status = _CLIENT_GONE
                raise
            except MMServeError as err:
                status = int(err.status)
                raise self._refusal(method, err, _status.code_of(err), err.message) from None
            except Exception as err:
                status = int(HTTPStatus.INTERNAL_SERVER_ERROR)
                raise self._refusal(method, err, grpc.StatusCode.INTERNAL, _UNEXPECTED) from None
            finally:
                model, version = call.model
                seconds = time.perf_counter() - started
                self.metrics.observe_request(route, model, version, status, seconds)

        return handle

    def _authorize(self, method: str, call: Call) -> None:
        if method in ADMIN:
            check_admin(bearer_of(call.raw_headers), self.settings)
        elif method not in OPEN and self.settings.api_key is not None and not self._keyed(call):
            raise NO_KEY

    def _keyed(self, call: Call) -> bool:
        """Whether the call carries the API key (or the admin token), as HTTP checks it."""
        return credential(call.raw_headers, self.settings) != NO_CREDENTIAL

    def _refusal(self, method: str, err: Exception, code: grpc.StatusCode, message: str) -> Refused:
        """The call's end with ``code`` and ``message``; a model's failure or an unforeseen
        one is logged with its traceback under an ``error-id`` the caller gets."""
        self.metrics.errors.labels(type(err).__name__).inc()
        trailers: list[tuple[str, str]] = []
        if isinstance(err, MMServeError) and err.retry_after is not None:
            trailers.append(("retry-after", str(err.retry_after)))
        if isinstance(err, ModelError) or not isinstance(err, MMServeError):
            error_id = uuid.uuid4().hex
            log.error("error %s on gRPC %s", error_id, method, exc_info=err)
            trailers.append(("error-id", error_id))
        return Refused(code, message, trailers)

    # -- health and metadata ---------------------------------------------------------------

    async def ServerLive(self, request: Any, call: Call) -> Any:
        return _proto.message("ServerLiveResponse")(live=True)

    async def ServerReady(self, request: Any, call: Call) -> Any:
        report = await health.readiness(self.dataplane)
        return _proto.message("ServerReadyResponse")(ready=report["ready"])

    async def ServerMetadata(self, request: Any, call: Call) -> Any:
        return _proto.message("ServerMetadataResponse")(
            name="mmserve", version=serving.__version__, extensions=["model_repository"]
        )

    async def ModelReady(self, request: Any, call: Call) -> Any:
        readiness = await v2_routes.readiness_of(
            self.dataplane, _ref(request.name, request.version)
        )
        return _proto.message("ModelReadyResponse")(ready=readiness.ready)

    async def ModelMetadata(self, request: Any, call: Call) -> Any:
        metadata = await v2_routes.metadata_of(self.registry, _ref(request.name, request.version))
        return _proto.message("ModelMetadataResponse")(**metadata)

    # -- inference -------------------------------------------------------------------------

    async def ModelInfer(self, request: Any, call: Call) -> Any:
        """Score the request's tensors with its model, or with the endpoint of that name."""
        size = request.ByteSize()
        decoded = await off_loop_if_large(size, _tensors.decode, request)
        decode = v2.reader(decoded)
        name, version = request.model_name, request.model_version
        if not version and name in self.endpoints.snapshot:  # as the HTTP route does
            served, variant, refs = await self.endpoints.choose(name, call.headers)
            answer = await self.endpoints.invoke(served, variant, refs, call.headers, decode, size)
            call.model = answer.last
            mv = answer.predictors[-1].version
            call.trailers += [
                ("x-mmserve-variant", variant.name),
                ("x-mmserve-model", answer.model),
                ("x-inference-id", answer.inference_id),
            ]
            table = answer.table
            self.endpoints.after(answer, decode, size)  # not awaited: captures, shadows
        else:
            scored = await self.dataplane.predict(_ref(name, version), decode, size)
            mv, table = scored.predictor.version, scored.table
            call.model = (mv.name, mv.version)
            if scored.load_seconds is not None:
                call.trailers += [
                    ("x-mmserve-cold-start", "true"),
                    ("x-mmserve-load-seconds", f"{scored.load_seconds:.6f}"),
                ]
        response = _proto.message("ModelInferResponse")(
            model_name=mv.name, model_version=str(mv.version), id=request.id
        )
        outputs = v2.outputs(table, decoded.request, mv.output_shapes)
        _tensors.encode(response, outputs, raw=bool(request.raw_input_contents))
        return response

    # -- the repository extension ----------------------------------------------------------

    async def RepositoryIndex(self, request: Any, call: Call) -> Any:
        entries = await _in_thread(repository.index, self.registry, request.ready)
        return _proto.message("RepositoryIndexResponse")(
            models=[entry.model_dump() for entry in entries]
        )

    async def RepositoryModelLoad(self, request: Any, call: Call) -> Any:
        name = _proto.model_name(request)
        await _in_thread(repository.load, self.registry, name)
        return _proto.message("RepositoryModelLoadResponse")(model_name=name, isLoaded=True)

    async def RepositoryModelUnload(self, request: Any, call: Call) -> Any:
        name = _proto.model_name(request)
        await _in_thread(repository.unload, self.registry, name)
        return _proto.message("RepositoryModelUnloadResponse")(model_name=name, isUnloaded=True)


_UNEXPECTED = "internal error; see the server log"
_CLIENT_GONE = 499  # what the metrics count a cancelled call as (nginx's "client closed")


def _ref(name: str, version: str) -> str:
    """A model reference from a request's name and version (``""``: none)."""
    return f"{name}:{version}" if version else name


def _on_loop(
    loop: asyncio.AbstractEventLoop, handle: Callable[[Any, Call], Coroutine[Any, Any, Any]]
) -> Callable[[Any, grpc.ServicerContext], Any]:
    """``handle`` as the handler of a gRPC thread: the coroutine runs on ``loop`` (the
    server's, where the data plane lives) while the thread waits for its answer.

    Why threads, not grpc.aio: an aio server accepts one call per round trip through its
    completion-queue poller, so concurrent calls reached the data plane one by one and
    seldom shared a micro-batch (1.1 requests a batch for ``lr`` at 16 clients, HTTP ~9).
    Here each call waits in a thread of its own, so calls that arrive together are on the
    loop together and join one batch (~7): at 16 clients, gRPC went from 0.26x to 0.45x
    HTTP's req/s (benchmarks/README.md, "gRPC against HTTP"). (De)serialization happens
    in those threads too.
    """

    def behavior(request: Any, context: grpc.ServicerContext) -> Any:
        call = Call(context)
        answer = asyncio.run_coroutine_threadsafe(handle(request, call), loop)
        context.add_callback(answer.cancel)  # the client went away, or its deadline passed
        try:
            response = answer.result()
        except Refused as refused:
            context.set_trailing_metadata((*call.trailers, *refused.trailers))
            context.abort(refused.code, refused.message)
        except concurrent.futures.CancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled")
        context.set_trailing_metadata(call.trailers)
        return response

    return behavior


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)
