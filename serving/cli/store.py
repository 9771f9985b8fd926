"""``mmserve store clean``: what failed writes left in the store."""

from __future__ import annotations

from typing import Annotated

import typer

from serving.cli._app import app, out, reports_errors
from serving.settings import Settings
from serving.store import Store

store_app = typer.Typer(help="Look after the object store.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("clean")
@reports_errors
def clean(
    url: Annotated[
        str | None,
        typer.Argument(help="The store (or a batch output) to clean; default MMSERVE_STORE_URL."),
    ] = None,
    older_than_h: Annotated[
        float,
        typer.Option(min=0, help="Only what is older than this (a write may still be going on)."),
    ] = 24.0,
) -> None:
    """Remove temporary files and abort incomplete S3 multipart uploads left by killed
    processes (a failed write cleans up after itself; a killed one cannot). On S3, a bucket
    lifecycle rule (AbortIncompleteMultipartUpload) does the same for the uploads."""
    settings = Settings()
    store = Store.from_url(url or settings.store_url, settings.aws)
    temporaries, uploads = store.clean(older_than_h * 3600)
    out.print(
        f"removed {temporaries} temporary files and aborted {uploads} incomplete uploads "
        f"older than {older_than_h:g} h in {store.url}",
        soft_wrap=True,
    )
