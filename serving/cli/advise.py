"""``mmserve advise``: which mode a model should use."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from serving.cli._app import (
    app,
    fail,
    out,
    reports_errors,
)
from serving.registry import Registry
from serving.settings import Settings

if TYPE_CHECKING:
    from serving.advise import Advice


@app.command("advise")
@reports_errors
def advise_mode(
    latency_ms: Annotated[
        float | None, typer.Option(help="How soon an answer is needed, in ms.")
    ] = None,
    payload_mb: Annotated[
        float | None, typer.Option(help="Size of one request (or event), in MB.")
    ] = None,
    rps: Annotated[
        float | None, typer.Option(help="Requests (rows, events) a second, over a month.")
    ] = None,
    pattern: Annotated[
        Literal["steady", "spiky", "rare"] | None,
        typer.Option(help="How requests come: steady, spiky (bursts), rare (long pauses)."),
    ] = None,
    processing_s: Annotated[
        float | None, typer.Option(help="Model time per request, in seconds.")
    ] = None,
    waiting: Annotated[
        bool | None,
        typer.Option("--waiting/--no-waiting", help="Whether someone waits for each answer."),
    ] = None,
    input: Annotated[
        Literal["requests", "dataset", "events"] | None,
        typer.Option(help="Requests one by one, a dataset to score whole, or a stream of events."),
    ] = None,
    models: Annotated[
        int, typer.Option(min=1, help="Distinct models served (>1: a multi-model endpoint).")
    ] = 1,
    chain: Annotated[
        int, typer.Option(min=1, help="Models applied in turn per request (>1: a pipeline).")
    ] = 1,
    from_capture: Annotated[
        str | None,
        typer.Option(
            metavar="ENDPOINT",
            help="Read the rate, pattern, payload and latency from the endpoint's data "
            "capture in the store (the flags given override them).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the advice as JSON.")] = False,
) -> None:
    """Which mode fits: real time, serverless, async, batch or streaming, with the reasons,
    the limits that decided it and a rough monthly cost of each (illustrative unit prices:
    MMSERVE_ADVISE__*)."""
    import dataclasses

    from serving.advise import Requirements, advise, read_traffic

    given = {
        "latency_ms": latency_ms, "payload_mb": payload_mb, "rps": rps, "pattern": pattern,
        "processing_s": processing_s, "waiting": waiting, "input": input,
    }  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    if not given and from_capture is None:
        fail("give a requirement (--latency-ms, --payload-mb, --rps, --pattern, ...) or "
              "--from-capture ENDPOINT", 2)  # fmt: skip
    settings = Settings()
    traffic = None
    if from_capture is not None:
        traffic = read_traffic(Registry.from_settings(settings).store, from_capture, settings)
        given = {**traffic.requirements(), **given}
    try:
        req = Requirements(**given, models=models, chain=chain)
    except ValidationError as e:
        problems = [f"--{str(p['loc'][0]).replace('_', '-')}: {p['msg']}" for p in e.errors()]
        fail("; ".join(problems), 2)
    advice = advise(req, settings)
    if traffic is not None:
        advice = dataclasses.replace(advice, traffic=traffic.to_json())
    if as_json:
        typer.echo(json.dumps(advice.to_json(), indent=2))
        return
    _print_advice(advice)


def _print_advice(advice: Advice) -> None:
    """The advice for a person: the traffic read, the mode and why, every mode compared."""
    from serving.advise.model import duration, money, size

    if advice.traffic is not None:
        t = advice.traffic
        out.print(
            f"endpoint {t['endpoint']}: {t['requests']:,} requests captured (sample "
            f"{t['sample']:.0%}), {t['pattern']}: {t['why']}; latency p50 "
            f"{t['latency_p50_ms']:.1f} ms, p99 {t['latency_p99_ms']:.1f} ms",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"[bold]mode: {advice.mode}[/] ({', '.join(advice.decided_by)})", highlight=False)
    for reason in advice.reasons:
        out.print(f"  - {escape(reason)}", highlight=False)
    table = Table("mode", "fits", "payload", "timeout", "to zero", "billing", "per month")
    for view in advice.modes:
        limits = advice.limits[view.mode]
        table.add_row(
            f"[bold]{view.mode}[/]" if view.mode == advice.mode else view.mode,
            "yes" if view.fits else "[red]no[/]",
            "-" if limits.max_payload_mb is None else size(limits.max_payload_mb),
            "-" if limits.timeout_s is None else duration(limits.timeout_s),
            "yes" if view.scales_to_zero else "no",
            view.billing,
            "-" if view.monthly_usd is None else money(view.monthly_usd),
        )
    out.print(table)
    for note in advice.notes:
        out.print(f"[dim]{escape(note)}[/]", highlight=False)
