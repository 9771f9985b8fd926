"""The gRPC server beside the HTTP one: grpcio's threads take the calls, uvicorn's event loop
answers them, over the same planes."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from serving.grpc.service import InferenceService
from serving.http._dataplane import DataPlane
from serving.http._endpoints import EndpointPlane
from serving.http._metrics import Metrics

log = logging.getLogger("mmserve.grpc")


class Server:
    """A running gRPC server (:func:`start`), stopped from the event loop."""

    def __init__(self, server: grpc.Server, threads: ThreadPoolExecutor):
        self._server = server
        self._threads = threads

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let those in flight finish for up to ``grace`` seconds (their
        threads wait for the loop, which goes on running meanwhile)."""
        await asyncio.to_thread(self._server.stop(grace).wait)
        self._threads.shutdown(wait=False)


async def start(dataplane: DataPlane, endpoints: EndpointPlane, metrics: Metrics) -> Server:
    """Listen on ``grpc_host:grpc_port``, messages bounded by ``max_payload_bytes`` as HTTP
    bodies are. Several server processes (``--workers``) share the port: gRPC binds it
    with SO_REUSEPORT, and the kernel spreads the connections.

    A call holds one of the server's threads while the loop answers it
    (:func:`serving.grpc.service._on_loop`), so there are as many threads as the data plane
    admits calls for a model by default (``serving.max_concurrency``): a call waits for a
    thread only where it would have been refused (429, RESOURCE_EXHAUSTED) anyway. The
    executor starts threads only as concurrent calls need them."""
    settings = dataplane.settings
    service = InferenceService(dataplane, endpoints, metrics)
    threads = ThreadPoolExecutor(settings.serving.max_concurrency, thread_name_prefix="grpc")
    server = grpc.server(
        threads,
        handlers=(service.handler(asyncio.get_running_loop()),),
        options=[("grpc.max_receive_message_length", settings.max_payload_bytes)],
    )
    host = f"[{settings.grpc_host}]" if ":" in settings.grpc_host else settings.grpc_host
    address = f"{host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as err:
        raise RuntimeError(f"cannot listen for gRPC on {address}: {err}") from None
    server.start()
    log.info("Open Inference Protocol over gRPC on %s", address)
    return Server(server, threads)
