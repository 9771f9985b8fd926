"""The gRPC server beside the HTTP one: on the same event loop, over the same planes."""

from __future__ import annotations

import logging

import grpc

from serving.grpc.service import InferenceService
from serving.http._dataplane import DataPlane
from serving.http._endpoints import EndpointPlane
from serving.http._metrics import Metrics

log = logging.getLogger("mmserve.grpc")


async def start(
    dataplane: DataPlane, endpoints: EndpointPlane, metrics: Metrics
) -> grpc.aio.Server:
    """Listen on ``grpc_host:grpc_port``, messages bounded by ``max_payload_bytes`` as HTTP
    bodies are. Several server processes (``--workers``) share the port: gRPC binds it
    with SO_REUSEPORT, and the kernel spreads the connections."""
    settings = dataplane.settings
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", settings.max_payload_bytes)]
    )
    server.add_generic_rpc_handlers((InferenceService(dataplane, endpoints, metrics).handler(),))
    host = f"[{settings.grpc_host}]" if ":" in settings.grpc_host else settings.grpc_host
    address = f"{host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as err:
        raise RuntimeError(f"cannot listen for gRPC on {address}: {err}") from None
    await server.start()
    log.info("Open Inference Protocol over gRPC on %s", address)
    return server
