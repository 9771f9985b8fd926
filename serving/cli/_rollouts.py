"""What ``mmserve endpoints shift`` and ``mmserve models alias --rollout`` share: the
guardrails' options and the rollout controller, run in this process."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from serving.cli._app import (
    DEFAULT_URL,
    err,
    fail,
    out,
)
from serving.registry import Registry
from serving.settings import Settings

Servers = Annotated[
    list[str],
    typer.Option(
        "--server",
        help="A server whose /metrics the guardrails read; repeat for each.",
        show_default=DEFAULT_URL,
    ),
]
MaxErrorRate = Annotated[
    float, typer.Option(min=0, max=1, help="Roll back when the new side's 5xx rate passes it.")
]
MaxP99Ms = Annotated[
    float | None, typer.Option(min=0, help="Roll back when the new side's p99 passes it (ms).")
]
MinRequests = Annotated[
    int, typer.Option(min=1, help="Requests the new side answers before guardrails judge it.")
]
Interval = Annotated[float, typer.Option(min=0.05, help="Seconds between metrics reads.")]


def endpoints_store() -> Any:
    from serving.endpoints.catalog import Endpoints
    from serving.store import Store

    settings = Settings()
    return Endpoints(Store.from_url(settings.store_url, settings.aws))


def controller_of(
    servers: list[str],
    max_error_rate: float,
    max_p99_ms: float | None,
    min_requests: int,
    interval: float,
) -> Any:
    from serving.endpoints.guardrails import Guardrails
    from serving.endpoints.rollout import Controller

    guardrails = Guardrails(max_error_rate, max_p99_ms, min_requests)
    return Controller(
        endpoints_store(),
        servers or [DEFAULT_URL],
        guardrails,
        poll_s=interval,
        report=lambda message: err.print(message, highlight=False, soft_wrap=True),
    )


def report_decision(decision: Any) -> None:
    """Print how a rollout ended; a rollback ends the command with exit 1."""
    if decision.outcome != "completed":
        fail(f"rolled back {decision.kind} to {decision.target}: {decision.reason}")
    out.print(f"completed: {decision.kind} to {decision.target}", highlight=False)


def promote(
    registry: Registry,
    name: str,
    alias: str,
    version: int,
    strategy: str,
    force: bool,
    controller: Any,
) -> None:
    """``models alias --rollout``: the alias moved through a guarded rollout of the
    endpoints that serve it; left where it was on a rollback."""
    from serving.errors import AliasNotFound, NotApproved

    mv = registry.get(f"{name}:{version}")
    if alias in registry.settings.protected_aliases and mv.approval != "approved" and not force:
        raise NotApproved(mv.ref, mv.approval, alias)  # before any request goes to it
    current = registry.aliases(name).get(alias)
    if current is None:
        raise AliasNotFound(name, alias)
    if current == version:
        out.print(f"{name}@{alias} is already {name}:{version}")
        return
    settings = Settings()
    settle_s = settings.registry.alias_ttl_s + settings.deployment.state_ttl_s
    decision = controller.promote(
        name,
        alias,
        current,
        version,
        strategy,
        lambda: registry.set_alias(name, alias, version, force=force),
        settle_s,
    )
    report_decision(decision)
    out.print(f"{name}@{alias} → {name}:{version}")
