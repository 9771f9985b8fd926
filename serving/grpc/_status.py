"""mmserve's errors as gRPC status codes: from the HTTP status each carries, in one table,
so an error has the same meaning and the same message whichever protocol answers it.

    HTTP status of the error              gRPC status
    400, 415, 422 (and any other 4xx)     INVALID_ARGUMENT
    401                                   UNAUTHENTICATED
    403                                   PERMISSION_DENIED
    404                                   NOT_FOUND
    409                                   ABORTED
    413                                   RESOURCE_EXHAUSTED (what gRPC's own size limit says)
    429 (overloaded)                      RESOURCE_EXHAUSTED
    501                                   UNIMPLEMENTED
    503 (loading, store or queue away)    UNAVAILABLE
    504 (past the request timeout)        DEADLINE_EXCEEDED
    507 (a model bigger than the cache)   RESOURCE_EXHAUSTED
    500 and anything else                 INTERNAL
"""

from __future__ import annotations

from http import HTTPStatus

import grpc

from serving.errors import MMServeError

_CODES = {
    HTTPStatus.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    HTTPStatus.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    HTTPStatus.CONFLICT: grpc.StatusCode.ABORTED,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.TOO_MANY_REQUESTS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.NOT_IMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    HTTPStatus.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    HTTPStatus.INSUFFICIENT_STORAGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def code_of(err: MMServeError) -> grpc.StatusCode:
    """The gRPC status code of ``err`` (the table above)."""
    code = _CODES.get(err.status)
    if code is not None:
        return code
    if HTTPStatus.BAD_REQUEST <= err.status < HTTPStatus.INTERNAL_SERVER_ERROR:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL
