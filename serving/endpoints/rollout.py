"""The rollout controller: moves weight step by step and rolls back on a guardrail breach.

It runs where it is started (``mmserve endpoints shift``, ``mmserve models alias
--rollout``), writes each step to the endpoints' state in the store (servers follow within
``state_ttl_s``) and reads the guardrails from the servers' ``/metrics``. On a breach it
puts the weights back at once and records the decision and its reason in the state.

A promotion is the same rollout over the variants that name ``model@alias``: they send
the rollout's share of their requests to the new version; at the end the alias is moved
in the registry (which refuses unapproved versions for protected aliases) and the state
cleared once every server has seen the move (``alias_ttl_s``).
"""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from serving.endpoints.catalog import Endpoints
from serving.endpoints.guardrails import Breach, Guardrails, Watch
from serving.endpoints.state import (
    AliasShift,
    Decision,
    EndpointState,
    Kind,
    Outcome,
    Rollout,
    now,
    shifted,
)
from serving.endpoints.strategy import Step, parse
from serving.errors import NotServed, RolloutInProgress, UnsupportedOperation, VariantNotFound


@dataclass
class Plan:
    """One rollout: what moves on which endpoints, and how its side is told apart in metrics."""

    kind: Kind
    target: str
    strategy: str
    endpoints: list[str]
    select: Callable[[dict[str, str]], bool]
    to_variant: str | None = None
    alias: AliasShift | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


class Controller:
    """Runs rollouts against the endpoints of ``store`` and the ``servers`` serving them."""

    def __init__(
        self,
        endpoints: Endpoints,
        servers: list[str],
        guardrails: Guardrails,
        *,
        poll_s: float = 1.0,
        report: Callable[[str], None] = lambda message: None,
        watch: Callable[[list[str], Callable[[dict[str, str]], bool]], Watch] = Watch,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.endpoints = endpoints
        self.servers = servers
        self.guardrails = guardrails
        self.poll_s = poll_s
        self.report = report
        self._watch = watch
        self._sleep = sleep
        self._clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    # -- the two kinds -----------------------------------------------------------------------

    def shift(self, name: str, to: str, strategy: str) -> Decision:
        """Move ``name``'s traffic to its variant ``to``."""
        config = self.endpoints.config(name)
        variants = [v.name for v in config.production_variants]
        if to not in variants:
            raise VariantNotFound(name, to, variants)
        plan = Plan(
            "variant",
            to,
            strategy,
            [name],
            lambda labels: labels.get("endpoint") == name and labels.get("variant") == to,
            to_variant=to,
        )
        return self.run(plan, parse(strategy))

    def promote(
        self,
        model: str,
        alias: str,
        from_version: int,
        to_version: int,
        strategy: str,
        move: Callable[[], None],
        settle_s: float,
    ) -> Decision:
        """Send a growing share of the traffic of ``model@alias`` to ``to_version``; at the
        end ``move()`` the alias (then wait ``settle_s`` for servers to see it)."""
        shift = AliasShift(
            model=model, alias=alias, from_version=from_version, to_version=to_version
        )
        served = [
            name
            for name in self.endpoints.names()
            if any(
                shift.matches(ref)
                for variant in self.endpoints.config(name).production_variants
                for ref in variant.steps
            )
        ]
        if not served:
            raise NotServed(f"{model}@{alias}")
        new = shift.new_ref
        plan = Plan(
            "alias",
            f"{model}@{alias} -> {to_version}",
            strategy,
            served,
            lambda labels: (
                labels.get("endpoint") in served and new in labels.get("model", "").split(",")
            ),
            alias=shift,
        )
        return self.run(plan, parse(strategy), move, settle_s)

    # -- the loop ----------------------------------------------------------------------------

    def run(
        self,
        plan: Plan,
        steps: list[Step],
        move: Callable[[], None] | None = None,
        settle_s: float = 0.0,
    ) -> Decision:
        """Step through ``steps`` under the guardrails; the decision it ends with."""
        watch = self._watch(self.servers, plan.select)
        watch.start()  # unreadable servers stop it here, before any weight moves
        self._begin(plan, len(steps))
        try:
            for number, step in enumerate(steps, 1):
                if not self._step(plan, number, step.share):
                    return self._ended_elsewhere(plan)
                self.report(f"step {number}/{len(steps)}: {plan.target} at {step.share:g}%")
                breach = self._hold(plan, watch, step.hold_s)
                if isinstance(breach, Decision):
                    return breach
                if breach is not None:
                    return self._finish(plan, "rolled_back", breach.reason, breach)
            if move is not None:
                move()
                self._sleep(settle_s)
        except BaseException as err:  # interrupted, the store or the metrics away: undo
            self._finish(plan, "rolled_back", f"stopped: {type(err).__name__}: {err}")
            raise
        return self._finish(plan, "completed", "every step passed its guardrails")

    def _hold(self, plan: Plan, watch: Watch, seconds: float) -> Breach | Decision | None:
        """Watch the guardrails for ``seconds`` (at least once)."""
        deadline = self._clock() + seconds
        while True:
            breach = self.guardrails.breach(watch.poll())
            if breach is not None:
                return breach
            left = deadline - self._clock()
            if left <= 0:
                return None
            self._sleep(min(self.poll_s, left))
            if not self._still_ours(plan):
                return self._ended_elsewhere(plan)

    # -- the state ---------------------------------------------------------------------------

    def _begin(self, plan: Plan, steps: int) -> None:
        begun: list[str] = []
        try:
            for name in plan.endpoints:
                self.endpoints.update_state(
                    name, functools.partial(self._started, name, plan=plan, steps=steps)
                )
                begun.append(name)
        except RolloutInProgress:
            for name in begun:  # a promotion over several endpoints starts on all or none
                self.endpoints.update_state(name, lambda s: s.changed(rollout=None))
            raise

    def _started(self, name: str, state: EndpointState, plan: Plan, steps: int) -> EndpointState:
        if state.rollout is not None:
            raise RolloutInProgress(name, f"{state.rollout.kind} to {state.rollout.target}")
        share = state.weights.get(plan.to_variant or "", 0.0) if plan.to_variant else 0.0
        total = sum(state.weights.values())
        rollout = Rollout(
            id=plan.id,
            kind=plan.kind,
            strategy=plan.strategy,
            target=plan.target,
            before=dict(state.weights),
            alias=plan.alias,
            steps=steps,
            share=100.0 * share / total if total else 0.0,
            owner=self.owner,
        )
        return state.changed(rollout=rollout)

    def _step(self, plan: Plan, number: int, share: float) -> bool:
        """Write step ``number``; ``False`` if the rollout was ended by someone else."""
        ours = True

        def change(state: EndpointState) -> EndpointState:
            nonlocal ours
            rollout = state.rollout
            if rollout is None or rollout.id != plan.id:
                ours = False
                return state
            weights = state.weights
            if plan.to_variant is not None:
                weights = shifted(rollout.before, plan.to_variant, share)
            update = {"step": number, "share": share, "updated": now()}
            return state.changed(weights=weights, rollout=rollout.model_copy(update=update))

        for name in plan.endpoints:
            self.endpoints.update_state(name, change)
        return ours

    def _still_ours(self, plan: Plan) -> bool:
        for name in plan.endpoints:
            rollout = self.endpoints.state(name).rollout
            if rollout is None or rollout.id != plan.id:
                return False
        return True

    def _finish(
        self, plan: Plan, outcome: Outcome, reason: str, breach: Breach | None = None
    ) -> Decision:
        decision = Decision(
            rollout=plan.id,
            kind=plan.kind,
            target=plan.target,
            strategy=plan.strategy,
            outcome=outcome,
            reason=reason,
            guardrail=breach.guardrail if breach else None,
            measured=breach.measured if breach else None,
            limit=breach.limit if breach else None,
        )

        def change(state: EndpointState) -> EndpointState:
            rollout = state.rollout
            if rollout is None or rollout.id != plan.id:
                return state  # ended elsewhere meanwhile: that decision stands
            final = decision.model_copy(update={"before": rollout.before})
            weights = dict(state.weights) if outcome == "completed" else dict(rollout.before)
            return state.decided(final, weights)

        for name in plan.endpoints:
            self.endpoints.update_state(name, change)
        self.report(f"{outcome.replace('_', ' ')}: {reason}")
        return decision

    def _ended_elsewhere(self, plan: Plan) -> Decision:
        last = self.endpoints.state(plan.endpoints[0]).last
        if last is not None and last.rollout == plan.id:
            return last
        return Decision(
            rollout=plan.id,
            kind=plan.kind,
            target=plan.target,
            strategy=plan.strategy,
            outcome="rolled_back",
            reason="ended elsewhere",
        )


def rollback(endpoints: Endpoints, name: str, reason: str = "rolled back by hand") -> Decision:
    """End ``name``'s rollout, weights back to where it started; with none running, undo
    the last completed shift. The decision recorded."""
    decided: list[Decision] = []

    def change(state: EndpointState) -> EndpointState:
        rollout, last = state.rollout, state.last
        if rollout is not None:
            decision = Decision(
                rollout=rollout.id,
                kind=rollout.kind,
                target=rollout.target,
                strategy=rollout.strategy,
                outcome="rolled_back",
                reason=reason,
                before=rollout.before,
            )
        elif last is not None and last.outcome == "completed" and last.kind == "variant":
            decision = last.model_copy(update={"outcome": "rolled_back", "reason": reason})
        else:
            raise UnsupportedOperation(
                f"rolling back endpoint {name!r}",
                "no rollout is running and the last one was not a completed shift",
            )
        decided.append(decision)
        return state.decided(decision.model_copy(update={"at": now()}), decision.before)

    endpoints.update_state(name, change)
    return decided[-1]
