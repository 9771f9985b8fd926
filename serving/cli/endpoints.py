"""``mmserve endpoints …``: apply, inspect, shift, roll back and compare endpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from serving.cli._app import (
    app,
    err,
    fail,
    load_registry,
    out,
    reports_errors,
    shown_time,
)
from serving.cli._rollouts import (
    Interval,
    MaxErrorRate,
    MaxP99Ms,
    MinRequests,
    Servers,
    controller_of,
    endpoints_store,
    report_decision,
)
from serving.errors import MMServeError
from serving.registry import Registry
from serving.settings import Settings

endpoints_app = typer.Typer(
    help="Endpoints: weighted variants, shadows, capture, pipelines; shift, roll back, compare.",
    no_args_is_help=True,
)
app.add_typer(endpoints_app, name="endpoints")


@endpoints_app.command("apply")
@reports_errors
def endpoints_apply(
    file: Annotated[Path, typer.Argument(help="The endpoints YAML file.")],
    check: Annotated[
        bool, typer.Option(help="Refuse references to models the registry does not have.")
    ] = True,
) -> None:
    """Validate FILE and write its endpoints to the store (servers follow within
    MMSERVE_DEPLOYMENT__STATE_TTL_S). Live weights survive unless FILE changes them."""
    from serving.endpoints import files

    declared = files.load(file)
    registry = load_registry()
    if check:
        for name, endpoint in declared.endpoints.items():
            refs = [r for v in endpoint.production_variants for r in v.steps]
            for ref in [*refs, *([endpoint.shadow.model] if endpoint.shadow else [])]:
                try:
                    registry.resolve(ref)
                except MMServeError as e:
                    fail(f"endpoint {name!r}: {e.message} (--no-check applies it anyway)")
    changed = endpoints_store().apply(declared)
    for name in declared.endpoints:
        out.print(f"{name}: {'applied' if name in changed else 'unchanged'}", highlight=False)


@endpoints_app.command("list")
@reports_errors
def endpoints_list() -> None:
    """Every endpoint: mode, variants and their share of traffic, shadow, rollout."""
    from serving.endpoints.state import percentages

    table = Table("name", "mode", "variants", "shadow", "rollout")
    for name, served in sorted(endpoints_store().snapshot().items()):
        shares = percentages(served.state.weights)
        variants = ", ".join(f"{v} {share:g}%" for v, share in shares.items())
        rollout = served.state.rollout
        table.add_row(
            name,
            served.config.mode,
            variants,
            served.config.shadow.model if served.config.shadow else "",
            f"{rollout.kind} to {rollout.target}: {rollout.share:g}%" if rollout else "",
        )
    out.print(table)


@endpoints_app.command("show")
@reports_errors
def endpoints_show(
    name: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """An endpoint's variants and live weights, its rollout's progress, the last decision."""
    from serving.endpoints.catalog import dumps
    from serving.endpoints.state import percentages

    served = endpoints_store().served(name)
    if as_json:
        typer.echo(dumps(served))
        return
    state, config = served.state, served.config
    shares = percentages(state.weights)
    out.print(f"[bold]{name}[/bold] ({config.mode}, generation {state.generation})")
    for variant in config.production_variants:
        weight = state.weights.get(variant.name, 0.0)
        models = ", ".join(variant.steps)
        share = shares.get(variant.name, 0.0)
        out.print(f"  {variant.name}: {models}  weight {weight:g} ({share:.1f}%)", highlight=False)
    if config.shadow:
        out.print(f"  shadow: {config.shadow.model} (sample {config.shadow.sample:g})")
    if state.rollout:
        r = state.rollout
        out.print(
            f"rollout: {r.kind} to {r.target}, {r.strategy}: step {r.step}/{r.steps}, "
            f"{r.share:g}% (since {shown_time(r.started)}, by {r.owner})",
            highlight=False,
        )
    if state.last:
        d = state.last
        out.print(
            f"last decision: {d.outcome} {d.kind} to {d.target} at {shown_time(d.at)}: {d.reason}",
            highlight=False,
        )


@endpoints_app.command("delete")
@reports_errors
def endpoints_delete(name: str) -> None:
    """Delete endpoint NAME (refused during a rollout); servers stop serving it within
    MMSERVE_DEPLOYMENT__STATE_TTL_S. Its captured traffic stays. An endpoint a server's
    MMSERVE_ENDPOINTS file declares comes back when the file is applied again: remove it
    there too."""
    endpoints_store().delete(name)
    out.print(f"deleted endpoint {name}", highlight=False)


@endpoints_app.command("shift")
@reports_errors
def endpoints_shift(
    name: str,
    to: Annotated[str, typer.Option(help="The variant the traffic moves to.")],
    strategy: Annotated[
        str,
        typer.Option(help="all-at-once | canary:10%,wait=5m | linear:20%,every=1m [,bake=D]"),
    ] = "all-at-once",
    max_error_rate: MaxErrorRate = 0.01,
    max_p99_ms: MaxP99Ms = None,
    min_requests: MinRequests = 10,
    server: Servers = [],  # noqa: B006
    interval: Interval = 1.0,
) -> None:
    """Move NAME's traffic to a variant step by step; on a guardrail breach put it back at
    once, record why and exit 1. Servers follow within MMSERVE_DEPLOYMENT__STATE_TTL_S."""
    controller = controller_of(server, max_error_rate, max_p99_ms, min_requests, interval)
    report_decision(controller.shift(name, to, strategy))


@endpoints_app.command("rollback")
@reports_errors
def endpoints_rollback(name: str) -> None:
    """End NAME's rollout with its weights as they were before it (or undo the last shift)."""
    from serving.endpoints.rollout import rollback

    decision = rollback(endpoints_store(), name)
    out.print(f"{name}: rolled back {decision.kind} to {decision.target}", highlight=False)


@endpoints_app.command("compare")
@reports_errors
def endpoints_compare(
    name: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """Primary vs shadow, from the capture: agreement, score deltas, latency."""
    from serving.endpoints.compare import compare

    report = compare(endpoints_store().store, name)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    agreement = report["agreement"]
    shown = "n/a" if agreement is None else f"{agreement:.2%}"
    out.print(f"{name}: {report['pairs']} rows answered by both; labels agree {shown}")
    for column, delta in report["deltas"].items():
        out.print(f"  {column}: mean |Δ| {delta['mean_abs']:.4g}, max |Δ| {delta['max_abs']:.4g}")
    for side in ("primary", "shadow"):
        s = report[side]
        out.print(
            f"  {side}: {', '.join(s['models'])}: {s['requests']} requests, {s['errors']} "
            f"failed, p50 {s['latency_ms']['p50']} ms, p99 {s['latency_ms']['p99']} ms",
            highlight=False,
        )


@endpoints_app.command("batch")
@reports_errors
def endpoints_batch(
    name: str,
    input: Annotated[str, typer.Option(help="A file, folder or glob; a path or s3://...")],
    output: Annotated[str, typer.Option(help="A folder; a path or s3://...")],
    variant: Annotated[
        str | None, typer.Option(help="The variant to score with.", show_default="the busiest")
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="Input column kept in the output.")] = None,
    on_error: Annotated[
        Literal["fail", "skip"], typer.Option(help="A bad row stops the run, or goes to _rejects/.")
    ] = "fail",
) -> None:
    """Score a dataset with one of NAME's variants (the one with the most traffic now unless
    --variant), as `mmserve batch run` does; its version (a pipeline: each step's) is pinned
    at start."""
    from batch.runner import run_batch
    from batch.spec import BatchSpec
    from serving import scorers
    from serving.errors import VariantNotFound

    served = endpoints_store().served(name)
    variants = served.config.production_variants
    weights = served.state.weights
    chosen = (
        served.config.variant(variant)
        if variant
        else max(variants, key=lambda v: weights.get(v.name, 0.0))
    )
    if chosen is None:
        raise VariantNotFound(name, str(variant), [v.name for v in variants])
    spec = BatchSpec(
        model=scorers.join(chosen.steps),
        input=input,
        output=output,
        id_column=id_column,
        on_error=on_error,
    )
    settings = Settings()
    manifest = run_batch(spec, Registry.from_settings(settings), settings)
    err.print(
        f"{manifest['rows']} rows scored by {name}/{chosen.name} ({manifest['model']}) → {output}",
        highlight=False,
        soft_wrap=True,
    )
    typer.echo(manifest["run_id"])
