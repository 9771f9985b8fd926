"""The Open Inference Protocol (V2) over gRPC: ``mmserve serve --grpc-port 8081``.

``inference.GRPCInferenceService`` (KServe's and Triton's), served beside HTTP by the same
process, answered on the same event loop, through the same data plane: batching, limits,
endpoints and errors do not depend on the protocol that brought the rows. Needs the ``grpc`` extra
(``pip install 'mmserve[grpc]'``); nothing else in mmserve imports grpc.

    _proto     the messages and the service, built at import time into a private pool
    _tensors   ModelInferRequest/Response <-> the V2 codec's tensors
    _status    mmserve's errors as gRPC status codes
    service    the RPCs
    server     the gRPC server the app's lifespan starts and stops: grpcio's threads
               take the calls, the event loop answers them
"""

from __future__ import annotations

MISSING = "gRPC needs the grpc extra, which is not installed: pip install 'mmserve[grpc]'"


def available() -> bool:
    """Whether the ``grpc`` extra (grpcio, protobuf) is installed (imported to know: asked
    only by a server about to serve gRPC)."""
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError:
        return False
    return True
