"""How a server follows its endpoints: the store's configs and states read every
``state_ttl_s``, the endpoints file (``MMSERVE_ENDPOINTS``) applied at start and again when
it changes, the endpoints' batching and serverless policies handed to the data plane.

A bad file is refused with its line and reason in the log, and the endpoints applied
before keep serving: only a file that validates whole is written to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from serving.endpoints import files
from serving.endpoints.catalog import Served
from serving.endpoints.config import Endpoint
from serving.endpoints.state import percentages
from serving.errors import InvalidEndpoints, MMServeError, UnsupportedOperation
from serving.http._endpoints import EndpointPlane
from serving.refs import ModelRef
from serving.settings import ModelServing

log = logging.getLogger("mmserve.endpoints")


class Follower:
    """The background work that keeps an :class:`EndpointPlane` in step with the store."""

    def __init__(self, plane: EndpointPlane):
        self.plane = plane
        self.settings = plane.settings
        self._seen: str | None = None  # the file's text last applied (or refused)
        self._tasks: list[asyncio.Task[None]] = []
        self._provisioned: set[str] = set()
        self._reads = self._shown = 0  # store reads started, and the latest one applied

    async def start(self) -> None:
        """Apply the file and read the store once (before the first request), then follow."""
        if self.settings.endpoints is not None:
            with contextlib.suppress(MMServeError):  # logged; the store's endpoints serve
                await self.apply_file()
        await self.refresh()
        self.plane.capture.start()
        self._tasks = [asyncio.create_task(self._refresh_forever())]
        if self.settings.endpoints is not None:
            self._tasks.append(asyncio.create_task(self._watch_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.plane.drain_shadows(5.0)
        await self.plane.capture.stop()

    async def reload(self) -> dict[str, Any]:
        """``POST /v1/endpoints:reload``: the file applied again (400 naming the line when it
        is bad), and the store read again."""
        if self.settings.endpoints is None:
            raise UnsupportedOperation("reloading endpoints", "MMSERVE_ENDPOINTS names no file")
        changed = await self.apply_file()
        await self.refresh()
        return {
            "file": str(self.settings.endpoints),
            "changed": changed,
            "endpoints": sorted(self.plane.snapshot),
        }

    async def apply_file(self, text: str | None = None) -> list[str]:
        """Validate the file (``text``, if already read) and write its endpoints to the store."""
        path = self.settings.endpoints
        assert path is not None
        try:
            if text is None:
                text = await asyncio.to_thread(_read, path)
            self._seen = text
            file = files.parse(text, str(path))
            changed = await asyncio.to_thread(self.plane.endpoints.apply, file)
        except InvalidEndpoints as err:
            log.error(
                "endpoints file refused, the endpoints applied before keep serving: %s", err.message
            )
            raise
        except MMServeError as err:
            log.error("endpoints file not applied: %s", err.message)
            raise
        if changed:
            log.info("endpoints applied from %s: %s", path, ", ".join(changed))
        return changed

    async def refresh(self) -> None:
        self._reads += 1
        read = self._reads
        try:
            snapshot = await asyncio.to_thread(self.plane.endpoints.snapshot)
        except MMServeError as err:  # the store away: keep following what was read last
            log.warning("endpoints not refreshed: %s", err.message)
            return
        if read < self._shown:  # a read started later (after a delete) was applied already
            return
        self._shown = read
        self.plane.snapshot = snapshot
        await self._apply_policies(snapshot)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.deployment.state_ttl_s)
            try:
                await self.refresh()
                if any(s.config.mode == "serverless" for s in self.plane.snapshot.values()):
                    self.plane.dataplane.unload_idle()
            except Exception:
                log.exception("endpoints refresh failed; trying again")

    async def _watch_forever(self) -> None:
        """Apply the file again when its text changes. The text, not its modification time:
        a file caught half-written (refused) and then completed within the same clock tick
        would keep its time, and never be applied whole."""
        path = self.settings.endpoints
        assert path is not None
        while True:
            await asyncio.sleep(self.settings.deployment.reload_interval_s)
            try:
                text = await asyncio.to_thread(_read, path)
            except InvalidEndpoints:
                continue  # being replaced, or gone: the endpoints in the store keep serving
            if text != self._seen:
                with contextlib.suppress(MMServeError):  # logged by apply_file
                    await self.apply_file(text)
                await self.refresh()

    # -- the data plane's policies ---------------------------------------------------------

    async def _apply_policies(self, snapshot: dict[str, Served]) -> None:
        """An endpoint's ``batching`` and ``serverless`` settings, over the server's
        per-model policy, for the models it calls (shared models: the last endpoint wins)."""
        dataplane = self.plane.dataplane
        for served in snapshot.values():
            update = _policy_update(served.config, self.settings.serverless.idle_ttl_s)
            if not update:
                continue
            for name in sorted(served.config.model_names()):
                policy = self.settings.serving_of(name).model_copy(update=update)
                if dataplane.policy(name) != policy:
                    dataplane.set_policy(name, policy)
                if policy.provisioned and name not in self._provisioned:
                    self._provisioned.add(name)
                    await asyncio.to_thread(_warm, dataplane.registry, name, served)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidEndpoints(str(path), None, f"cannot read it: {err}") from None


def _policy_update(config: Endpoint, default_idle_s: float) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if config.batching is not None:
        update |= config.batching.model_dump(exclude_none=True)
    if config.mode == "serverless":
        serverless = config.serverless
        update["idle_ttl_s"] = (serverless.idle_ttl_s if serverless else None) or default_idle_s
        if serverless is not None:
            update["provisioned"] = serverless.provisioned
            if serverless.max_concurrency is not None:
                update["max_concurrency"] = serverless.max_concurrency
    ModelServing.model_validate({**ModelServing().model_dump(), **update})  # checked types
    return update


def _warm(registry: Any, name: str, served: Served) -> None:
    steps = [ref for variant in served.config.production_variants for ref in variant.steps]
    refs = {ref for ref in steps if ModelRef.parse(ref).name == name}
    for ref in refs:
        try:
            registry.load(ref)
        except MMServeError as err:
            log.warning("endpoint %s: model %s not provisioned: %s", served.name, ref, err.message)


class EndpointCollector(Collector):
    """Weights and rollouts of the endpoints this server follows, read at scrape time."""

    def __init__(self, plane: EndpointPlane):
        self.plane = plane

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        weight = GaugeMetricFamily(
            "mmserve_endpoint_weight",
            "Percent of an endpoint's traffic each variant gets now.",
            labels=["endpoint", "variant"],
        )
        step = GaugeMetricFamily(
            "mmserve_endpoint_rollout_step",
            "Step of the endpoint's rollout in progress (0: none).",
            labels=["endpoint"],
        )
        share = GaugeMetricFamily(
            "mmserve_endpoint_rollout_share",
            "Percent of the traffic on the side the rollout moves to (variant or version).",
            labels=["endpoint", "kind", "target"],
        )
        generation = GaugeMetricFamily(
            "mmserve_endpoint_generation",
            "Generation of the endpoint state this server follows.",
            labels=["endpoint"],
        )
        decided = GaugeMetricFamily(
            "mmserve_endpoint_last_decision_timestamp_seconds",
            "When the endpoint's last rollout ended, by how (outcome, guardrail breached).",
            labels=["endpoint", "kind", "target", "outcome", "guardrail"],
        )
        for name, served in sorted(self.plane.snapshot.items()):
            for variant, percent in percentages(served.state.weights).items():
                weight.add_metric([name, variant], percent)
            rollout = served.state.rollout
            step.add_metric([name], rollout.step if rollout else 0)
            if rollout is not None:
                share.add_metric([name, rollout.kind, rollout.target], rollout.share)
            generation.add_metric([name], served.state.generation)
            last = served.state.last
            if last is not None:
                labels = [name, last.kind, last.target, last.outcome, last.guardrail or ""]
                decided.add_metric(labels, last.at.timestamp())
        yield from (weight, step, share, generation, decided)
