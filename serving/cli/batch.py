"""``mmserve batch …``: batch transform runs."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import typer

from serving.cli._app import (
    app,
    err,
    fail,
    out,
    progress_bar,
    reports_errors,
)
from serving.registry import Registry
from serving.settings import Settings

batch_app = typer.Typer(
    help="Batch transform: score whole datasets (parquet, CSV, JSON lines; or files such as "
    "images, a row each; local or S3).",
    no_args_is_help=True,
)
app.add_typer(batch_app, name="batch")


@batch_app.command("run")
@reports_errors
def batch_run(
    model: Annotated[str, typer.Option(help="Model reference; its version is pinned at start.")],
    input: Annotated[str, typer.Option(help="A file, folder or glob; a path or s3://...")],
    output: Annotated[str, typer.Option(help="A folder; a path or s3://...")],
    id_column: Annotated[str | None, typer.Option(help="Input column kept in the output.")] = None,
    format: Annotated[
        Literal["parquet", "csv", "jsonl"], typer.Option(help="Format of the parts.")
    ] = "parquet",
    keep_columns: Annotated[
        str | None, typer.Option(help="More input columns to keep, comma-separated.")
    ] = None,
    join_input: Annotated[bool, typer.Option(help="Keep every input column.")] = False,
    on_error: Annotated[
        Literal["fail", "skip"], typer.Option(help="A bad row stops the run, or goes to _rejects/.")
    ] = "fail",
    workers: Annotated[int, typer.Option(min=1, help="Processes on this machine.")] = 1,
    distributed: Annotated[
        bool, typer.Option(help="One task per partition on the mmserve workers (needs a broker).")
    ] = False,
    run_id: Annotated[str | None, typer.Option(help="Resume this run (or name a new one).")] = None,
    resume: Annotated[bool, typer.Option(help="Resume the run the output holds.")] = False,
    batch_rows: Annotated[int, typer.Option(min=1, help="Rows scored at a time.")] = 65_536,
    partition_rows: Annotated[
        int, typer.Option(min=1, help="Rows per partition of a large parquet file.")
    ] = 1_000_000,
    publish_online: Annotated[
        bool,
        typer.Option(
            help="Also publish each row's outputs by --id-column to Redis, for the server's "
            "GET /v1/models/{ref}/precomputed/{id}."
        ),
    ] = False,
    files_out: Annotated[
        bool,
        typer.Option(
            help="Input files that are no tables (images...): write each one's answer, the "
            "model's one binary output, as OUTPUT/<path>.out."
        ),
    ] = False,
) -> None:
    """Score every row of INPUT into OUTPUT: one part per partition, then _manifest.json.
    Files that are no tables (scans/*.png) are a row each: path, then the model's one binary
    (or text) input. Run it again (--resume) after a crash: done parts are kept, the rest
    written."""
    from batch.runner import run_batch
    from batch.spec import BatchSpec

    spec = BatchSpec(
        model=model,
        input=input,
        output=output,
        id_column=id_column,
        format=format,
        keep_columns=[c for c in (keep_columns or "").split(",") if c],
        join_input=join_input,
        on_error=on_error,
        batch_rows=batch_rows,
        partition_rows=partition_rows,
        publish_online=publish_online,
        files_out=files_out,
    )
    settings = Settings()
    with progress_bar() as progress:
        task = progress.add_task("parts", total=None, rows=0, rate=0.0)
        started = time.monotonic()

        def planned(run: Any, total: int, done: int) -> None:
            err.print(f"run {run.run_id}: {run.model}, {total} parts ({done} already done)")
            progress.update(task, total=total, completed=done)

        def part_done(result: Any) -> None:
            rows = progress.tasks[task].fields["rows"] + result.rows
            rate = rows / max(time.monotonic() - started, 1e-9)
            progress.update(task, advance=1, rows=rows, rate=rate)

        manifest = run_batch(
            spec,
            Registry.from_settings(settings),
            settings,
            run_id=run_id,
            resume=resume,
            workers=workers,
            distributed=distributed,
            on_plan=planned,
            on_part=part_done,
        )
    err.print(
        f"{manifest['rows']} rows scored by {manifest['model']} in {len(manifest['parts'])} "
        f"parts ({manifest['rejected']} rejected), {manifest['seconds']:.1f} s → {output}",
        highlight=False,
        soft_wrap=True,
    )
    typer.echo(manifest["run_id"])


RUN_FAILED = 4
"""``mmserve batch status``'s exit code for a run that failed (1 is the command's own error,
2 a usage error)."""


@batch_app.command("status")
@reports_errors
def batch_status(run_id: str) -> None:
    """Where a run stands: parts done of all, rows, rejects, finished or not, as JSON.

    Exit codes: 0 the run succeeded or is still running;

    4 the run failed (its error is in the JSON, and on stderr);

    1 its status could not be read (no such run, the store away); 2 a usage error."""
    from batch.runner import status

    settings = Settings()
    state = status(Registry.from_settings(settings), settings, run_id)
    out.print_json(data=state)
    if state["status"] == "failed":
        fail(f"run {run_id} failed: {state['error']['message']}", RUN_FAILED)
