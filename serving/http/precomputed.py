"""``GET /v1/models/{ref}/precomputed/{id}``: a batch run's answer for one id, from Redis.

A run started with ``publish_online`` publishes its outputs when it finishes (see
``batch.online``); this route reads them back in one Redis round trip, on the event loop.
``churn`` answers from the published run, whatever its version; ``churn:3`` or
``churn@production`` only when the published run scored that version.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from batch.online import LOOKUP, pointer
from serving.errors import InvalidName, NotPrecomputed, RedisUnavailable
from serving.refs import ModelRef
from serving.registry import Registry

router = APIRouter(tags=["precomputed"])

_MAX_ID = 256


class Online:
    """The Redis the published runs are in (a client of this event loop, made on first use)."""

    def __init__(self, url: str | None):
        self.url = url
        self._lookup: Any = None

    async def lookup(self, name: str, id: str) -> tuple[dict[str, Any], str | None] | None:
        import redis.asyncio
        from redis.exceptions import RedisError

        if self.url is None:
            return None
        if self._lookup is None:
            client = redis.asyncio.Redis.from_url(
                self.url, decode_responses=True, socket_connect_timeout=2, socket_timeout=2
            )
            self._lookup = client.register_script(LOOKUP)
        try:
            answer = await self._lookup(keys=[pointer(name)], args=[id])
        except RedisError as err:
            raise RedisUnavailable(self.url, err) from err
        if answer is None:
            return None
        meta, outputs = answer
        return json.loads(meta), outputs


@router.get(
    "/v1/models/{ref}/precomputed/{id}",
    summary="The precomputed answer of one id, from the last batch run published online",
    responses={404: {"description": "no published run, or no row with that id"}},
)
async def precomputed(ref: str, id: str, request: Request) -> Response:
    wanted = ModelRef.parse(ref)
    if len(id) > _MAX_ID:
        raise InvalidName("id", id[:32] + "...", f"ids are at most {_MAX_ID} characters")
    online: Online = request.app.state.online
    found = await online.lookup(wanted.name, id)
    if found is None:
        why = "no batch run of it was published (batch run --publish-online)"
        if online.url is None:
            why = "this server has no Redis (MMSERVE_REDIS_URL) to read published runs from"
        raise NotPrecomputed(str(wanted), why)
    meta, outputs = found
    if wanted.version is not None or wanted.alias is not None:
        registry: Registry = request.app.state.registry
        known = registry.resolved(ref)
        if known is None:
            known = await run_in_threadpool(registry.resolve, ref)
        name, number = known
        if f"{name}:{number}" != meta["model"]:
            why = f"the published run ({meta['run_id']}) scored {meta['model']}"
            raise NotPrecomputed(f"{ref} ({name}:{number})", why)
    if outputs is None:
        raise NotPrecomputed(str(wanted), f"run {meta['run_id']} has no row with id {id!r}")
    age = time.time() - datetime.fromisoformat(meta["published"]).timestamp()
    name, version = meta["model"].split(":")
    head = {
        "id": id,
        "model": name,
        "version": int(version),
        "run_id": meta["run_id"],
        "published": meta["published"],
        "age_s": round(age, 3),
    }
    # The outputs are stored as JSON already: spliced in, not parsed and written again.
    body = json.dumps(head, separators=(",", ":"))[:-1] + ',"outputs":' + outputs + "}"
    headers = {"Age": str(max(0, int(age)))}
    return Response(body, media_type="application/json", headers=headers)
