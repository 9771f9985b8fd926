"""The ``mmserve`` command."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from serving.codecs import read_file, write_file
from serving.errors import MMServeError
from serving.registry import Registry
from serving.settings import Settings

app = typer.Typer(
    help="mmserve: one model registry, every way a model is put to work.", no_args_is_help=True
)
models_app = typer.Typer(
    help="Register, list, inspect, alias and approve models.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(fn: F) -> F:
    """Print mmserve errors as one line on stderr and exit 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MMServeError as e:
            err.print(f"[red]error:[/red] {e.message}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _registry() -> Registry:
    return Registry.from_settings(Settings())


@models_app.command("register")
@_reports_errors
def register(
    path: Annotated[
        Path, typer.Argument(help="A .skops artifact (or .joblib/.pkl with --trust-pickle).")
    ],
    name: Annotated[str, typer.Option(help="Model name.")],
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    trust_pickle: Annotated[
        bool, typer.Option(help="Allow a pickle/joblib artifact (it runs code when loaded).")
    ] = False,
    trust_type: Annotated[
        list[str], typer.Option(help="A type the skops artifact may contain; repeat.")
    ] = [],  # noqa: B006
    input_example: Annotated[
        Path | None,
        typer.Option(help="Rows (csv/json/parquet) to infer and check the input schema."),
    ] = None,
    nullable: Annotated[
        list[str], typer.Option(help="A feature that may be null/NaN (the model copes); repeat.")
    ] = [],  # noqa: B006
    description: Annotated[str, typer.Option()] = "",
    tag: Annotated[list[str], typer.Option(help="key=value; repeat.")] = [],  # noqa: B006
    approval: Annotated[
        Literal["approved", "pending"] | None,
        typer.Option(help="New version status (default: MMSERVE_REGISTRY__DEFAULT_APPROVAL)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Point a protected alias at an unapproved version.")
    ] = False,
) -> None:
    """Register a model artifact as the next version of NAME."""
    tags = dict(t.split("=", 1) for t in tag if "=" in t)
    mv = _registry().register(
        path,
        name,
        alias=alias,
        trust_pickle=trust_pickle,
        trusted_types=trust_type,
        input_example=input_example,
        nullable=nullable,
        description=description,
        tags=tags,
        approval=approval,
        force=force,
    )
    out.print(
        f"registered [bold]{mv.ref}[/bold] ({mv.flavor}, {mv.task}, sha256 {mv.sha256[:12]}...)"
    )


@models_app.command("list")
@_reports_errors
def list_models() -> None:
    """Every registered model: versions, aliases, flavor, created."""
    registry = _registry()
    table = Table("name", "versions", "aliases", "flavor", "task", "latest", "created")
    for name in registry.models():
        versions = registry.version_numbers(name)
        latest = registry.get(f"{name}:{versions[-1]}")
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(registry.aliases(name).items()))
        table.add_row(
            name,
            str(len(versions)),
            aliases,
            latest.flavor,
            latest.task,
            str(latest.version),
            _when(latest.created),
        )
    out.print(table)


@models_app.command("show")
@_reports_errors
def show(ref: str) -> None:
    """The metadata of a version: sha256, input schema, outputs, libraries, approval."""
    out.print_json(_registry().get(ref).model_dump_json())


@models_app.command("alias")
@_reports_errors
def alias(
    name: str,
    alias: str,
    version: Annotated[
        int | None, typer.Argument(help="Version to point at (omit with --delete).")
    ] = None,
    delete: Annotated[bool, typer.Option(help="Remove the alias.")] = False,
    force: Annotated[
        bool, typer.Option(help="Allow an unapproved version on a protected alias.")
    ] = False,
) -> None:
    """Point ALIAS of model NAME at VERSION (or remove it)."""
    registry = _registry()
    if delete:
        registry.remove_alias(name, alias)
        out.print(f"removed alias {name}@{alias}")
        return
    if version is None:
        raise typer.BadParameter("give a VERSION, or --delete")
    registry.set_alias(name, alias, version, force=force)
    out.print(f"{name}@{alias} → {name}:{version}")


@models_app.command("approve")
@_reports_errors
def approve(ref: str) -> None:
    """Mark a version approved (it may then be aliased production)."""
    out.print(f"{_registry().set_approval(ref, 'approved').ref} approved")


@models_app.command("reject")
@_reports_errors
def reject(
    ref: str,
    force: Annotated[bool, typer.Option(help="Even if a protected alias points at it.")] = False,
) -> None:
    """Mark a version rejected."""
    out.print(f"{_registry().set_approval(ref, 'rejected', force=force).ref} rejected")


@app.command("predict")
@_reports_errors
def predict(
    ref: str,
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Rows: .csv, .json, .jsonl, .parquet or .arrow.")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here (format by extension); default: print."),
    ] = None,
    id_column: Annotated[
        list[str], typer.Option(help="Copy this input column to the output; repeat.")
    ] = [],  # noqa: B006
) -> None:
    """Score a file in-process, through the same predict path as every serving mode."""
    predictor = _registry().load(ref)
    result = predictor.predict(read_file(input), passthrough=id_column)
    if output is not None:
        write_file(result, output)
        err.print(f"{result.num_rows} rows scored by {predictor.ref} → {output}")
        return
    if not sys.stdout.isatty():
        sys.stdout.write(json.dumps({"model": predictor.ref, "rows": result.to_pylist()}) + "\n")
        return
    table = Table(*result.column_names, title=f"{predictor.ref}: {result.num_rows} rows")
    for row in result.to_pylist():
        table.add_row(*(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()))
    out.print(table)


@app.command("serve")
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    serverless: Annotated[
        bool, typer.Option(help="Unload idle models (MMSERVE_SERVERLESS__IDLE_TTL_S).")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request, as JSON lines.")] = False,
) -> None:
    """Serve every registered model over HTTP: V1, V2 and SageMaker routes, health, metrics."""
    import uvicorn

    from serving import logs

    if serverless:  # read by the Settings each server process builds
        os.environ["MMSERVE_SERVERLESS__ENABLED"] = "true"
    uvicorn.run(
        "serving.http:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=logs.config(log_level, access_log),
        access_log=False,
    )


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")
