"""The ``mmserve`` command (Typer): one module a family of subcommands, each registering
itself on the root ``app``; the order of the imports is the order of ``mmserve --help``."""

from serving.cli import models, serve, jobs, batch, endpoints, stream, advise, store  # noqa: F401, I001
from serving.cli._app import app
from serving.cli.serve import worker

__all__ = ["app", "worker"]
