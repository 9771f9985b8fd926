"""``mmserve stream``: the streaming consumer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from serving.cli._app import (
    app,
    fail,
    reports_errors,
)
from serving.settings import Settings


@app.command("stream")
@reports_errors
def stream(
    model: Annotated[str, typer.Option(help="Model reference: name, name:version, name@alias.")],
    source: Annotated[str, typer.Option(help="The stream of events (a Redis key).")],
    sink: Annotated[str, typer.Option(help="The stream the outputs are added to.")],
    group: Annotated[str, typer.Option(help="Consumer group: its consumers share the events.")],
    consumer: Annotated[
        str | None,
        typer.Option(
            help="This consumer's name in the group; restarted under it, a consumer first "
            "finishes what it left. One per process.",
            show_default="the host name",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Most events per model call.", show_default="256"),
    ] = None,
    max_wait_ms: Annotated[
        float | None,
        typer.Option(min=0, help="Longest an event waits for its batch to fill.", show_default="5"),
    ] = None,
    id_field: Annotated[
        str | None, typer.Option(help="Event field copied to each output (required in events).")
    ] = None,
    dead_letter: Annotated[
        str | None,
        typer.Option(help="The stream of events that cannot be scored.", show_default="SINK-dlq"),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    start: Annotated[
        Literal["$", "0"] | None,
        typer.Option(help="Where a new group starts: '$' new events, 0 the whole stream."),
    ] = None,
    follow: Annotated[
        bool | None,
        typer.Option(
            "--follow/--pin",
            help="Score with the version an alias points at now (moves picked up between "
            "batches), or pin the version it named at start.",
            show_default="--follow",
        ),
    ] = None,
    json_field: Annotated[
        str | None, typer.Option(help="Event field holding a JSON object of the features.")
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option(
            help="Features file: per-key window aggregates computed before the model sees "
            "each event, kept in Redis and committed with the outputs.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Score a Redis stream's events as they arrive, in micro-batches, each output written
    once and atomically with its event's acknowledgement. SIGTERM: the batch in hand is
    finished and committed, then the command exits 0."""
    import logging
    import signal
    import socket
    import threading

    from serving.features import spec
    from serving.logs import JsonFormatter
    from serving.settings import StreamSettings
    from workers.stream import Names, serve

    declared = spec.load(features) if features is not None else None
    settings = Settings()
    if settings.redis is None:
        fail("MMSERVE_REDIS_URL (or MMSERVE_BROKER_URL) is not set: streaming needs Redis", 2)
    given = {
        "batch_size": batch_size, "max_wait_ms": max_wait_ms, "id_field": id_field,
        "metrics_port": metrics_port, "start": start, "follow": follow, "json_field": json_field,
    }  # fmt: skip
    options = StreamSettings.model_validate(
        {**settings.stream.model_dump(), **{k: v for k, v in given.items() if v is not None}}
    )
    dead_letter = dead_letter or f"{sink}-dlq"
    names = Names(source, sink, dead_letter, group, consumer or socket.gethostname())
    if len({names.source, names.sink, names.dead_letter}) < 3:
        fail("--source, --sink and --dead-letter must be three different streams", 2)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.getLogger("mmserve").addHandler(handler)
    logging.getLogger("mmserve").setLevel(log_level.upper())
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():  # asked twice: leave now; the batch in hand stays pending (claimed later)
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve(settings, options, names, model, stop, declared)
