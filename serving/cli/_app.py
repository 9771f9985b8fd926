"""The root of the ``mmserve`` command and what every subcommand shares: the consoles, the
error reporting, the default server address."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from serving.errors import MMServeError
from serving.registry import Registry
from serving.settings import Settings

app = typer.Typer(
    help="mmserve: one model registry, every way a model is put to work.", no_args_is_help=True
)
F = TypeVar("F", bound=Callable[..., Any])

PORT = 8080
"""Where ``mmserve serve`` listens, and so where ``mmserve jobs`` looks for it by default."""

out = Console()
err = Console(stderr=True)


def reports_errors(fn: F) -> F:
    """Print mmserve errors as one line on stderr and exit 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MMServeError as e:
            fail(e.message)
        except ValidationError as e:  # options that contradict each other
            fail(
                "; ".join(
                    str(problem["msg"]).removeprefix("Value error, ") for problem in e.errors()
                ),
                2,
            )

    return wrapper  # type: ignore[return-value]


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with ``error: <message>`` as one line on stderr (never wrapped, never
    read as rich markup: it may quote a server or a file name)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_registry() -> Registry:
    return Registry.from_settings(Settings())


ServerUrl = Annotated[
    str, typer.Option("--url", envvar="MMSERVE_URL", help="The running `mmserve serve`.")
]
ApiKey = Annotated[
    str | None,
    typer.Option(envvar="MMSERVE_API_KEY", help="Sent as 'Authorization: Bearer <key>'."),
]
DEFAULT_URL = f"http://127.0.0.1:{PORT}"
TIMEOUT_S = 60.0
"""The longest a request waits on a silent server (per connect or read)."""
MAX_INTERVAL_S = 5.0


def progress_bar() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


def shown_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")
