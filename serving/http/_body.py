"""Reading request bodies within the configured limit, and scoring off the event loop."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from serving.codecs import DecodeError
from serving.errors import PayloadTooLarge
from serving.predictor import Predictor
from serving.registry import Registry


async def read_body(request: Request) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``max_payload_bytes``: a declared
    Content-Length over the limit is refused before a byte is read."""
    limit: int = request.app.state.settings.max_payload_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
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


async def score(
    request: Request, ref: str, decode: Callable[[list[str]], pa.Table]
) -> tuple[Predictor, pa.Table]:
    """Load ``ref``, decode the rows (given its feature names) and predict, in a worker
    thread: loading reads the store and predicting is CPU work, neither for the event loop."""
    registry: Registry = request.app.state.registry

    def run() -> tuple[Predictor, pa.Table]:
        predictor = registry.load(ref)
        return predictor, predictor.predict(decode([f.name for f in predictor.version.inputs]))

    return await run_in_threadpool(run)
