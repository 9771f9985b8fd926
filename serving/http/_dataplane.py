"""The data plane: what every predict route hands its rows to.

It finds the model (loading it on first use, a cold start), admits the request under the
concurrency limits, checks the rows against the model's schema, joins them into a
micro-batch and hands back the request's own answer, all within the request timeout.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar, cast

import pyarrow as pa
from starlette.concurrency import run_in_threadpool

from serving.codecs import Matrix, Records, Rows
from serving.codecs.raw import Raw
from serving.errors import (
    ModelLoading,
    Overloaded,
    RequestTimeout,
    StoreUnavailable,
    UnsupportedOperation,
)
from serving.features.online import OnlineFeatures, open_features, served
from serving.http._batching import Deadlines, MicroBatcher
from serving.http._metrics import Metrics
from serving.http._middleware import note_stale
from serving.http._storecheck import StoreCheck
from serving.metadata import Feature
from serving.predictor import Answer, Predictor, Prepared
from serving.refs import ModelRef
from serving.registry import Registry
from serving.settings import ModelServing, Settings

T = TypeVar("T")
Key: TypeAlias = tuple[str, int]
Decode: TypeAlias = Callable[[list[Feature]], Rows | Raw]
"""A request's rows, given the model's features (names, types, tensor shapes): a table, a
matrix, or a raw body."""

log = logging.getLogger("mmserve.http")
_PROVISION_RETRY_S = 2.0

# Bodies up to this size are decoded and checked on the event loop: a thread hop would
# cost more than the work. Larger ones are decoded in a worker thread.
_INLINE_BYTES = 32 * 1024


def _table(rows: Rows | Raw) -> pa.Table:
    """A request's rows as a table (window features read fields by name)."""
    if isinstance(rows, Records | Matrix):
        return rows.table()
    if isinstance(rows, Raw):
        raise UnsupportedOperation("window features", "a raw body has no fields to key them by")
    return rows


async def off_loop_if_large(body_bytes: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``: on the event loop for a small body, in a worker thread for a large one."""
    if body_bytes <= _INLINE_BYTES:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


@dataclass(frozen=True, slots=True)
class Scored:
    predictor: Predictor
    table: pa.Table
    load_seconds: float | None  # set when this request waited for its model to load
    rows: list[dict[str, Any]] | None = None  # the table's rows, when asked for and cheap


class DataPlane:
    """Models on demand, limits, micro-batches: the one path of the HTTP predict routes."""

    def __init__(self, registry: Registry, settings: Settings, metrics: Metrics):
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self._batchers: dict[Key, MicroBatcher[Prepared, Answer]] = {}
        self._policies: dict[str, ModelServing] = {}
        self._in_flight: defaultdict[str, int] = defaultdict(int)
        self._total_in_flight = 0
        self._loads: dict[str, asyncio.Future[tuple[Predictor, float | None]]] = {}
        self._features: dict[Path, OnlineFeatures] = served(settings)
        self.provisioned = not any(p.provisioned for p in settings.models.values())
        self.store_check = StoreCheck(registry.store, max(settings.registry.alias_ttl_s, 1.0))

    async def predict(
        self, ref: str, decode: Decode, body_bytes: int, as_rows: bool = False
    ) -> Scored:
        """Score the rows ``decode(features)`` gives with the model ``ref``; ``as_rows``:
        the answer's rows as Python dicts too, where a shared call made them (a JSON answer)."""
        name = ModelRef.parse(ref).name
        policy = self.policy(name)
        features = self._online(policy)
        with self._admitted(name, policy):
            predictor = self._loaded(ref)
            inline = features is None and body_bytes <= _INLINE_BYTES
            if predictor is not None and policy.batching and inline:
                # The common case: a loaded model, a small body, a batch. The rows are checked
                # now, on the loop, and the batcher fails the request at its deadline: one
                # timer for all requests (asyncio.timeout's, one per request, was 4% of a
                # one-row request's time).
                prepared = predictor.prepare(decode(predictor.version.inputs), as_rows=as_rows)
                batcher = self._batcher(predictor, policy)
                answer = await batcher.submit(predictor.run, prepared, timed=True)
                return Scored(predictor, answer.table, None, answer.rows)
            try:
                async with asyncio.timeout(self.settings.request_timeout_s):
                    predictor, load_seconds = await self.predictor(ref)
                    prepared = await self._prepare(predictor, decode, body_bytes, as_rows, features)
                    answer = await self._run(predictor, policy, prepared)
            except TimeoutError:
                raise RequestTimeout(self.settings.request_timeout_s) from None
        return Scored(predictor, answer.table, load_seconds, answer.rows)

    def policy(self, name: str) -> ModelServing:
        policy = self._policies.get(name)
        if policy is None:
            policy = self._policies[name] = self.settings.serving_of(name)
        return policy

    def set_policy(self, name: str, policy: ModelServing) -> None:
        """Serve ``name`` by ``policy`` from now on (an endpoint's batching or serverless
        settings); its batchers were made from the old one and start over."""
        self._policies[name] = policy
        for key in [k for k in self._batchers if k[0] == name]:
            del self._batchers[key]

    # -- the model -----------------------------------------------------------------------

    async def predictor(self, ref: str) -> tuple[Predictor, float | None]:
        """The loaded model and, if this request had to wait for it to load, the load time.

        A loaded model is found without leaving the event loop. Otherwise one load per
        reference runs in a worker thread however many requests wait for it; a request that
        waits longer than ``model_load_wait_s`` gets 503 with Retry-After (the load goes on).
        """
        predictor = self._loaded(ref)
        if predictor is not None:
            return predictor, None
        loaded = await self._wait_for_load(ref)
        self._note_staleness(ref)
        return loaded

    def _loaded(self, ref: str) -> Predictor | None:
        """The model ``ref`` names, if it is loaded (found without leaving the loop)."""
        key = self.registry.resolved(ref)
        predictor = None if key is None else self.registry.cache.get(key)
        if predictor is not None:
            self._note_staleness(ref)
        return predictor

    def _note_staleness(self, ref: str) -> None:
        stale_s = self.registry.staleness(ref)
        if stale_s is not None:  # the store is away: the answer says how old its model's choice is
            note_stale(stale_s)

    async def _wait_for_load(self, ref: str) -> tuple[Predictor, float | None]:
        load = self._loads.get(ref)
        if load is None:
            loop = asyncio.get_running_loop()
            load = self._loads[ref] = asyncio.ensure_future(
                loop.run_in_executor(None, self._load, ref)
            )
            load.add_done_callback(lambda done: self._load_done(ref, done))
        wait = self.settings.model_load_wait_s
        try:
            return await asyncio.wait_for(asyncio.shield(load), wait)
        except TimeoutError:
            if load.done():
                raise
            raise ModelLoading(ref, wait) from None

    def _load(self, ref: str) -> tuple[Predictor, float | None]:
        key = self.registry.resolve(ref)
        if self.registry.cache.entry(key) is not None:
            return self.registry.load(ref), None
        predictor = self.registry.load(ref)
        entry = self.registry.cache.entry(key)
        seconds = entry.load_seconds if entry is not None else 0.0
        labels = (key[0], str(key[1]))
        self.metrics.cold_starts.labels(*labels).inc()
        self.metrics.load_seconds.labels(*labels).observe(seconds)
        return predictor, seconds

    def _load_done(self, ref: str, load: asyncio.Future[tuple[Predictor, float | None]]) -> None:
        self._loads.pop(ref, None)
        if not load.cancelled() and load.exception() is None:  # retrieved: no asyncio warning
            # The model's objects (and what its load imported) live as long as it stays
            # loaded: out of the collector's way, like the server's own at startup. Tracked,
            # the tens of thousands of them made every full collection a pause of tens of
            # ms under load (p99 at 64 connections: 59 ms frozen at startup only, 14 ms so).
            gc.freeze()

    async def provision(self) -> None:
        """Load the models marked ``provisioned`` (warm before their first request); while
        the store is away, try again every few seconds (readiness says so meanwhile)."""
        self.store_check.state()  # the first look at the store, for readiness
        loop = asyncio.get_running_loop()
        for name, policy in self.settings.models.items():
            while policy.provisioned:
                try:
                    await loop.run_in_executor(None, self.registry.load, name)
                    break
                except StoreUnavailable as err:
                    log.warning("provisioning %s: %s; trying again", name, err.message)
                    await asyncio.sleep(_PROVISION_RETRY_S)
        self.provisioned = True

    async def unload_idle_forever(self) -> None:
        """Serverless: look for idle models a few times per TTL, for as long as the server
        runs (returns at once when no model has an idle TTL)."""
        ttls = [self.idle_ttl(name) for name in [*self.settings.models, ""]]
        shortest = min((t for t in ttls if t is not None), default=None)
        if shortest is None:
            return
        while True:
            await asyncio.sleep(min(max(shortest / 4, 0.05), 5.0))
            self.unload_idle()

    def unload_idle(self) -> list[Key]:
        """Unload the models unused for longer than their idle TTL (serverless); provisioned
        models stay. Returns the unloaded keys."""
        unloaded = self.registry.cache.evict_idle(lambda key: self.idle_ttl(key[0]))  # type: ignore[index]
        for key in unloaded:
            self._batchers.pop(key, None)  # type: ignore[call-overload]
        if unloaded:  # frozen objects are never collected: free the models' cycles, if any
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        return cast(list[Key], unloaded)

    def idle_ttl(self, name: str) -> float | None:
        """How long ``name`` may stay unused before it unloads; ``None``: it stays."""
        policy = self.policy(name)
        if policy.provisioned:
            return None
        if policy.idle_ttl_s is not None:
            return policy.idle_ttl_s
        return self.settings.serverless.idle_ttl_s if self.settings.serverless.enabled else None

    # -- the request ---------------------------------------------------------------------

    @contextmanager
    def _admitted(self, name: str, policy: ModelServing) -> Iterator[None]:
        cap = self.settings.serverless.max_concurrency
        if cap is not None and self._total_in_flight >= cap:
            raise Overloaded("the server", cap)
        if self._in_flight[name] >= policy.max_concurrency:
            raise Overloaded(f"model {name!r}", policy.max_concurrency)
        self._in_flight[name] += 1
        self._total_in_flight += 1
        try:
            yield
        finally:
            self._in_flight[name] -= 1
            self._total_in_flight -= 1

    async def _prepare(
        self,
        predictor: Predictor,
        decode: Decode,
        body_bytes: int,
        as_rows: bool,
        features: OnlineFeatures | None = None,
    ) -> Prepared:
        def prepare() -> Prepared:
            rows = decode(predictor.version.inputs)
            if features is not None:  # reads Redis: off the loop
                names = [f.name for f in predictor.version.inputs]
                rows = features.table(_table(rows), names)
            return predictor.prepare(rows, as_rows=as_rows)

        if features is not None:
            return await run_in_threadpool(prepare)
        return await off_loop_if_large(body_bytes, prepare)

    def _online(self, policy: ModelServing) -> OnlineFeatures | None:
        """The window features of a model served with a features file (each read when the
        data plane is made, :func:`served`)."""
        if policy.features is None:
            return None
        found = self._features.get(policy.features)
        if found is None:
            redis_url = None if self.settings.redis is None else str(self.settings.redis)
            found = self._features[policy.features] = open_features(policy.features, redis_url)
        return found

    async def _run(self, predictor: Predictor, policy: ModelServing, prepared: Prepared) -> Answer:
        if not policy.batching:
            loop = asyncio.get_running_loop()
            return (await loop.run_in_executor(None, predictor.run, [prepared]))[0]
        return await self._batcher(predictor, policy).submit(predictor.run, prepared)

    def _batcher(
        self, predictor: Predictor, policy: ModelServing
    ) -> MicroBatcher[Prepared, Answer]:
        key = (predictor.version.name, predictor.version.version)
        batcher = self._batchers.get(key)
        if batcher is None:
            timeout = self.settings.request_timeout_s
            batcher = self._batchers[key] = MicroBatcher(
                policy.max_batch_size,
                policy.max_wait_ms / 1000,
                self._observer(key),
                Deadlines(timeout, lambda: RequestTimeout(timeout)),
            )
        return batcher

    def _observer(self, key: Key) -> Callable[[int, list[float]], None]:
        labels = (key[0], str(key[1]))
        sizes = self.metrics.batch_size.labels(*labels)
        waits = self.metrics.queue_wait.labels(*labels)

        def observe(size: int, queued: list[float]) -> None:
            sizes.observe(size)
            for seconds in queued:
                waits.observe(seconds)

        return observe
