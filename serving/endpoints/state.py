"""An endpoint's live state (``endpoints/<name>/state.json``): the weights traffic is split
by now, the rollout in progress, and the decisions of the last ones.

The file declares weights; a shift changes the live ones. Applying the file again leaves
them alone unless the declared weights themselves changed (an edited file), so a server
that restarts with ``MMSERVE_ENDPOINTS`` does not undo a finished shift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from serving.refs import ModelRef

HISTORY = 20
"""Decisions kept in the state (the newest last)."""
Kind = Literal["variant", "alias"]
Outcome = Literal["completed", "rolled_back"]


def now() -> datetime:
    return datetime.now(UTC)


class AliasShift(BaseModel):
    """A promotion in progress: ``share`` percent of the requests of variants that name
    ``model@alias`` go to ``to_version``, the rest to ``from_version``."""

    model: str
    alias: str
    from_version: int
    to_version: int

    def matches(self, ref: str) -> bool:
        """Whether ``ref`` means this alias (a bare name means ``production``)."""
        r = ModelRef.parse(ref)
        if r.name != self.model or r.version is not None:
            return False
        return r.alias == self.alias or (r.alias is None and self.alias == "production")

    @property
    def new_ref(self) -> str:
        return f"{self.model}:{self.to_version}"

    @property
    def old_ref(self) -> str:
        return f"{self.model}:{self.from_version}"


class Rollout(BaseModel):
    """A shift or a promotion, step by step, as its controller writes it."""

    id: str
    kind: Kind
    strategy: str
    target: str
    """The variant shifted to, or ``model@alias -> version``."""
    before: dict[str, float]
    """The weights when it started: what a rollback restores."""
    alias: AliasShift | None = None
    step: int = 0
    steps: int
    share: float = 0.0
    """Percent of the traffic on the new variant (or version) now."""
    started: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)
    owner: str = ""
    """``host:pid`` of the controller running it."""


class Decision(BaseModel):
    """How a rollout ended, and why."""

    rollout: str
    kind: Kind
    target: str
    strategy: str
    outcome: Outcome
    reason: str
    guardrail: str | None = None
    measured: float | None = None
    limit: float | None = None
    before: dict[str, float] = {}
    at: datetime = Field(default_factory=now)


class EndpointState(BaseModel):
    """What every server reads (within ``MMSERVE_DEPLOYMENT__STATE_TTL_S``) to split traffic."""

    weights: dict[str, float]
    declared: dict[str, float]
    """The file's weights these were last seeded from."""
    rollout: Rollout | None = None
    last: Decision | None = None
    history: list[Decision] = []
    generation: int = 0
    """Bumped by every change: a server (or a test) can tell it has seen one."""
    updated: datetime = Field(default_factory=now)

    @classmethod
    def seeded(cls, declared: dict[str, float]) -> EndpointState:
        return cls(weights=dict(declared), declared=dict(declared))

    def changed(self, **update: object) -> EndpointState:
        """A copy with ``update`` applied, a new generation and time."""
        values = {**update, "generation": self.generation + 1, "updated": now()}
        return self.model_copy(update=values)

    def decided(self, decision: Decision, weights: dict[str, float]) -> EndpointState:
        """The state once its rollout ended with ``decision``."""
        history = [*self.history, decision][-HISTORY:]
        return self.changed(weights=weights, rollout=None, last=decision, history=history)


def percentages(weights: dict[str, float]) -> dict[str, float]:
    """Each variant's share of the traffic, in percent."""
    total = sum(weights.values())
    return {k: (100.0 * w / total if total else 0.0) for k, w in weights.items()}


def shifted(before: dict[str, float], to: str, share: float) -> dict[str, float]:
    """Weights (percent) giving ``to`` ``share`` percent and the others the rest, in the
    proportions they had ``before``."""
    others = {k: w for k, w in before.items() if k != to}
    total = sum(others.values())
    rest = 100.0 - share
    weights = {
        k: (rest * w / total if total else rest / max(len(others), 1)) for k, w in others.items()
    }
    return {**weights, to: share}
