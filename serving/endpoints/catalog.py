"""Endpoints in the store, the source of truth of what is served::

    endpoints/<name>/config.json    the endpoint as applied (written atomically)
    endpoints/<name>/state.json     live weights, the rollout in progress, its decisions
                                    (changed by compare-and-swap only)

Every server reads both every ``state_ttl_s`` (:meth:`Endpoints.snapshot`), so a shift
written by one CLI process reaches every server on every machine within that time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from serving.endpoints.config import Endpoint, EndpointsFile
from serving.endpoints.state import Decision, EndpointState
from serving.errors import EndpointNotFound, ObjectNotFound, RolloutInProgress
from serving.refs import ModelRef, validate_name
from serving.store import Store

ROOT = "endpoints"


@dataclass(frozen=True, slots=True)
class Served:
    """One endpoint as a server sees it: its config and its live state."""

    name: str
    config: Endpoint
    state: EndpointState


class Endpoints:
    """Apply, read and change the endpoints kept in a :class:`Store`."""

    def __init__(self, store: Store):
        self.store = store

    def names(self) -> list[str]:
        return [n for n in self.store.list(ROOT) if self.store.exists(self._key(n, "config.json"))]

    def config(self, name: str) -> Endpoint:
        try:
            data = self.store.read(self._key(validate_name(name, "endpoint name"), "config.json"))
        except ObjectNotFound:
            raise EndpointNotFound(name, self.names()) from None
        return Endpoint.model_validate_json(data)

    def state(self, name: str, config: Endpoint | None = None) -> EndpointState:
        """The live state; the config's declared weights if none was written yet."""
        try:
            return EndpointState.model_validate_json(self.store.read(self._key(name, "state.json")))
        except ObjectNotFound:
            return EndpointState.seeded((config or self.config(name)).declared_weights)

    def served(self, name: str) -> Served:
        config = self.config(name)
        return Served(name, config, self.state(name, config))

    def snapshot(self) -> dict[str, Served]:
        """Every endpoint, config and state (what a server refreshes every ``state_ttl_s``)."""
        found = {}
        for name in self.store.list(ROOT):
            try:
                found[name] = self.served(name)
            except EndpointNotFound:  # a folder without a config (yet)
                continue
        return found

    def naming(self, name: str, version: int) -> list[str]:
        """The endpoints whose variants (or shadow) name version ``version`` of model ``name``
        itself (``churn:3``), as ``endpoint 'x' (variant blue)``: what deleting it would break.
        References through an alias are the alias' business."""
        pinned = ModelRef(name, version=version)
        found = []
        for endpoint, served in sorted(self.snapshot().items()):
            config = served.config
            for variant in config.production_variants:
                if any(ModelRef.parse(step) == pinned for step in variant.steps):
                    found.append(f"endpoint {endpoint!r} (variant {variant.name})")
            if config.shadow is not None and ModelRef.parse(config.shadow.model) == pinned:
                found.append(f"endpoint {endpoint!r} (shadow)")
        return found

    # -- changing --------------------------------------------------------------------------

    def delete(self, name: str) -> None:
        """Remove an endpoint: its config first (servers stop serving it at their next read of
        the store), then its state. Refused while a rollout runs on it; its captured traffic
        stays. An endpoint still declared in a server's endpoints file comes back when that
        file is applied again."""
        state = self.served(name).state
        if state.rollout is not None:
            rollout = state.rollout
            raise RolloutInProgress(name, f"{rollout.kind} to {rollout.target}")
        self.store.delete(self._key(name, "config.json"))
        self.store.delete(self._key(name, "state.json"))

    def apply(self, file: EndpointsFile) -> list[str]:
        """Write each endpoint's config (when it changed) and seed its state; returns the
        names of the endpoints that changed."""
        return [name for name, ep in file.endpoints.items() if self.apply_one(name, ep)]

    def apply_one(self, name: str, endpoint: Endpoint) -> bool:
        key = self._key(name, "config.json")
        data = endpoint.model_dump_json(indent=2).encode()
        try:
            changed = self.store.read(key) != data
        except ObjectNotFound:
            changed = True
        if changed:
            self.store.write(key, data)
        declared = endpoint.declared_weights
        current = self._state_or_none(name)
        if current is None or current.declared != declared:
            self.update_state(name, lambda state: _reseeded(state, declared), endpoint)
            changed = True
        return changed

    def update_state(
        self,
        name: str,
        change: Callable[[EndpointState], EndpointState],
        config: Endpoint | None = None,
    ) -> EndpointState:
        """Replace the state with ``change(state)``, atomically against every other writer."""
        declared = (config or self.config(name)).declared_weights

        def apply(current: bytes | None) -> bytes:
            state = (
                EndpointState.model_validate_json(current)
                if current is not None
                else EndpointState.seeded(declared)
            )
            return change(state).model_dump_json(indent=2).encode()

        data = self.store.update(self._key(name, "state.json"), apply)
        return EndpointState.model_validate_json(data)

    def _state_or_none(self, name: str) -> EndpointState | None:
        try:
            return EndpointState.model_validate_json(self.store.read(self._key(name, "state.json")))
        except ObjectNotFound:
            return None

    @staticmethod
    def _key(name: str, leaf: str) -> str:
        return f"{ROOT}/{name}/{leaf}"


def _reseeded(state: EndpointState, declared: dict[str, float]) -> EndpointState:
    """The state once the file declares new weights: those, and any rollout superseded."""
    if state.declared == declared:  # another server re-seeded it first
        return state
    if state.rollout is None:
        return state.changed(weights=dict(declared), declared=dict(declared))
    rollout = state.rollout
    decision = Decision(
        rollout=rollout.id,
        kind=rollout.kind,
        target=rollout.target,
        strategy=rollout.strategy,
        outcome="rolled_back",
        reason="superseded: the endpoint was applied again with other weights",
        before=rollout.before,
    )
    return state.decided(decision, dict(declared)).model_copy(update={"declared": dict(declared)})


def dumps(served: Served) -> str:
    """An endpoint as JSON: config and state (``endpoints show --json``)."""
    return json.dumps(
        {
            "name": served.name,
            "config": served.config.model_dump(mode="json", exclude_none=True),
            "state": served.state.model_dump(mode="json"),
        },
        indent=2,
    )
