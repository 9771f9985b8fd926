"""``mmserve models …`` and ``mmserve predict``: the registry from the command line."""

from __future__ import annotations

import json
import sys
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
    promote,
)
from serving.codecs import read_file, write_file
from serving.runtimes import Flavor

models_app = typer.Typer(
    help="Register, list, inspect, alias and approve models.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

# Options both ``register`` and ``import`` take.
NewAlias = Annotated[
    str | None, typer.Option("--alias", help="Point this alias at the new version.")
]
TrustTypes = Annotated[
    list[str], typer.Option("--trust-type", help="A type the skops artifact may contain; repeat.")
]
Description = Annotated[str, typer.Option("--description")]
Tags = Annotated[list[str], typer.Option("--tag", help="key=value; repeat.")]
NewApproval = Annotated[
    Literal["approved", "pending"] | None,
    typer.Option(
        "--approval", help="New version status (default: MMSERVE_REGISTRY__DEFAULT_APPROVAL)."
    ),
]
Force = Annotated[
    bool, typer.Option("--force", help="Point a protected alias at an unapproved version.")
]


def _tags(pairs: list[str]) -> dict[str, str]:
    """``--tag key=value`` options as a dict; one without ``=`` is refused, not dropped."""
    for pair in pairs:
        if "=" not in pair:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--tag")
    return dict(pair.split("=", 1) for pair in pairs)


@models_app.command("register")
@reports_errors
def register(
    path: Annotated[
        Path,
        typer.Argument(
            help="A model file: .skops (or .joblib/.pkl with --trust-pickle), XGBoost "
            ".ubj/.json, LightGBM .txt, ONNX .onnx; or a folder of Python code with an "
            "mmserve.toml (with --trust-code)."
        ),
    ],
    name: Annotated[str, typer.Option(help="Model name.")],
    flavor: Annotated[
        Flavor | None,
        typer.Option(help="The model's runtime, when its file name and content do not tell."),
    ] = None,
    alias: NewAlias = None,
    trust_pickle: Annotated[
        bool, typer.Option(help="Allow a pickle/joblib artifact (it runs code when loaded).")
    ] = False,
    trust_type: TrustTypes = [],  # noqa: B006
    trust_code: Annotated[
        bool, typer.Option(help="Allow a folder of Python code (it runs when loaded).")
    ] = False,
    input_example: Annotated[
        Path | None,
        typer.Option(help="Rows (csv/json/parquet) to infer and check the input schema."),
    ] = None,
    nullable: Annotated[
        list[str], typer.Option(help="A feature that may be null/NaN (the model copes); repeat.")
    ] = [],  # noqa: B006
    description: Description = "",
    tag: Tags = [],  # noqa: B006
    approval: NewApproval = None,
    force: Force = False,
    compile: Annotated[
        Literal["onnx"] | None,
        typer.Option(
            help="Register a scikit-learn model as its ONNX graph (skl2onnx), served by "
            "onnxruntime; needs --input-example, whose rows both must answer alike."
        ),
    ] = None,
    compile_tolerance: Annotated[
        float | None,
        typer.Option(help="Largest absolute probability difference allowed (1e-05)."),
    ] = None,
) -> None:
    """Register a model artifact as the next version of NAME."""
    mv = load_registry().register(
        path,
        name,
        alias=alias,
        flavor=flavor,
        trust_pickle=trust_pickle,
        trust_code=trust_code,
        trusted_types=trust_type,
        input_example=input_example,
        nullable=nullable,
        description=description,
        tags=_tags(tag),
        approval=approval,
        force=force,
        compile=compile,
        compile_tolerance=compile_tolerance,
    )
    # The whole sha256, computed here from the file: what an operator pins in the servers'
    # trust root (MMSERVE_REGISTRY__TRUSTED_SHA256), never read back from the store.
    out.print(
        f"registered [bold]{mv.ref}[/bold] ({mv.flavor}, {mv.task}, sha256 {mv.sha256})",
        soft_wrap=True,
    )
    if mv.compiled is not None:
        c = mv.compiled
        out.print(
            f"compiled from {c.source_type} ({c.source_flavor}, sha256 {c.source_sha256}) by "
            f"{c.converter} {c.converter_version}: {c.rows_checked} rows checked, "
            f"{'labels equal, ' if mv.task == 'classifier' else ''}max difference "
            f"{c.max_difference:.3g} <= tolerance {c.tolerance:g}",
            soft_wrap=True,
            highlight=False,
        )


@models_app.command("import")
@reports_errors
def import_from_mlflow(
    source: Annotated[
        str,
        typer.Argument(
            help="An MLflow model: models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH."
        ),
    ],
    name: Annotated[str, typer.Option(help="Model name in mmserve.")],
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_TRACKING_URI",
            help="The MLflow tracking server (its model registry too, unless "
            "MLFLOW_REGISTRY_URI says otherwise).",
        ),
    ] = None,
    mlflow_flavor: Annotated[
        str | None,
        typer.Option(
            help="The model's MLflow flavor to import (default: the first of "
            "sklearn, xgboost, lightgbm, onnx, python_function it has)."
        ),
    ] = None,
    alias: NewAlias = None,
    trust_pickle: Annotated[
        bool, typer.Option(help="Allow a pickled model (it runs code when loaded).")
    ] = False,
    trust_type: TrustTypes = [],  # noqa: B006
    trust_code: Annotated[
        bool, typer.Option(help="Allow a python_function model (its code runs when loaded).")
    ] = False,
    description: Description = "",
    tag: Tags = [],  # noqa: B006
    approval: NewApproval = None,
    force: Force = False,
) -> None:
    """Register a model of an MLflow tracking server (its registry, or a run) as the next
    version of NAME; the version's tags record the source, its run and its version."""
    from rich.markup import escape

    from serving.imports.mlflow import import_model

    mv = import_model(
        load_registry(),
        source,
        name,
        tracking_uri=tracking_uri,
        mlflow_flavor=mlflow_flavor,
        alias=alias,
        trust_pickle=trust_pickle,
        trust_code=trust_code,
        trusted_types=trust_type,
        description=description,
        tags=_tags(tag),
        approval=approval,
        force=force,
    )
    out.print(
        f"imported {escape(source)} as [bold]{mv.ref}[/bold] ({mv.flavor}, {mv.task}, sha256 "
        f"{mv.sha256})",
        soft_wrap=True,
        highlight=False,
    )


@models_app.command("list")
@reports_errors
def list_models() -> None:
    """Every registered model: versions, aliases, flavor, created."""
    registry = load_registry()
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
            shown_time(latest.created),
        )
    out.print(table)


@models_app.command("show")
@reports_errors
def show(ref: str) -> None:
    """The metadata of a version: sha256, input schema, outputs, libraries, approval."""
    out.print_json(load_registry().get(ref).model_dump_json())


@models_app.command("alias")
@reports_errors
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
    rollout: Annotated[
        str | None,
        typer.Option(
            help="Move it through a guarded rollout of the endpoints that serve it: "
            "canary:10%,wait=5m, linear:20%,every=1m or all-at-once (see endpoints shift)."
        ),
    ] = None,
    max_error_rate: MaxErrorRate = 0.01,
    max_p99_ms: MaxP99Ms = None,
    min_requests: MinRequests = 10,
    server: Servers = [],  # noqa: B006
    interval: Interval = 1.0,
) -> None:
    """Point ALIAS of model NAME at VERSION (or remove it)."""
    registry = load_registry()
    if delete:
        registry.remove_alias(name, alias)
        out.print(f"removed alias {name}@{alias}")
        return
    if version is None:
        raise typer.BadParameter("give a VERSION, or --delete")
    if rollout is not None:
        controller = controller_of(server, max_error_rate, max_p99_ms, min_requests, interval)
        promote(registry, name, alias, version, rollout, force, controller)
        return
    registry.set_alias(name, alias, version, force=force)
    out.print(f"{name}@{alias} → {name}:{version}")


@models_app.command("approve")
@reports_errors
def approve(ref: str) -> None:
    """Mark a version approved (it may then be aliased production)."""
    out.print(f"{load_registry().set_approval(ref, 'approved').ref} approved")


@models_app.command("reject")
@reports_errors
def reject(
    ref: str,
    force: Annotated[bool, typer.Option(help="Even if a protected alias points at it.")] = False,
) -> None:
    """Mark a version rejected."""
    out.print(f"{load_registry().set_approval(ref, 'rejected', force=force).ref} rejected")


@models_app.command("delete")
@reports_errors
def delete(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION, the version to delete.")],
) -> None:
    """Delete a version no alias nor endpoint points at: its artifact and metadata leave the
    store, and its number is never given again. Servers that have it loaded keep it until
    they unload it."""
    from serving.endpoints.catalog import Endpoints
    from serving.refs import ModelRef

    parsed = ModelRef.parse(ref)
    if parsed.version is None:
        why = "a version is deleted by its number"
        fail(f"give NAME:VERSION ({parsed.name}:3), not {ref!r}: {why}", 2)
    registry = load_registry()
    users = Endpoints(registry.store).naming(parsed.name, parsed.version)
    registry.delete_version(parsed.name, parsed.version, users=users)
    out.print(f"deleted {parsed}", highlight=False)


@app.command("predict")
@reports_errors
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
    predictor = load_registry().load(ref)
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
