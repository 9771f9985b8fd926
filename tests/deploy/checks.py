"""What the deployment files are checked against: the ``mmserve`` command tree (Typer's),
the names and values of the settings, and the routes of the HTTP app."""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import pytest
import typer
import typer.main
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

from serving.cli import app
from serving.http import create_app
from serving.settings import Settings

MMSERVE_PREFIX = "MMSERVE_"
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
URL_SETTINGS = ("MMSERVE_BROKER_URL", "MMSERVE_REDIS_URL", "AWS_ENDPOINT_URL")


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """``mmserve ARGV`` parsed by the CLI itself, without running it: the subcommand's
    path (``jobs submit``) and its parameters. Raises :class:`Refused` with Click's own
    message for an unknown subcommand or option, a bad value or a missing option."""
    command: Any = _tree()
    path: list[str] = []
    rest = list(argv)
    while hasattr(command, "commands"):  # a group: the next word picks a subcommand
        if not rest or rest[0] not in command.commands:
            where = " ".join(["mmserve", *path])
            raise Refused(f"{where}: no subcommand {rest[0] if rest else '(none given)'!r}")
        path.append(rest.pop(0))
        command = command.commands[path[-1]]
    try:
        context = command.make_context(" ".join(["mmserve", *path]), rest)
    except typer.TyperException as err:
        raise Refused(f"mmserve {' '.join(path)}: {err.format_message()}") from None
    return " ".join(path), dict(context.params)


@functools.cache
def _tree() -> Any:
    """The Click command tree Typer builds from the app (once: it takes tens of ms)."""
    return typer.main.get_command(app)


class Refused(Exception):
    """A deployment file's command that ``mmserve`` would refuse."""


def problems_of_command(argv: list[str]) -> list[str]:
    try:
        parse(argv)
    except Refused as err:
        return [str(err)]
    return []


@functools.cache
def setting_names() -> frozenset[str]:
    """Every environment variable the settings read: ``MMSERVE_`` and the fields, ``__``
    into nested groups, and the ``AWS_*`` names of :class:`AwsSettings` (aliases included)."""
    return frozenset(_names(Settings, MMSERVE_PREFIX))


def _names(model: type[BaseModel], prefix: str) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):  # its own prefix: AWS_
            names |= _own_names(kind)
        elif isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= _names(kind, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")  # dicts and lists too: as JSON
    return names


def _own_names(model: type[BaseSettings]) -> set[str]:
    prefix = str(model.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names |= {str(c) for c in choices}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def interpolated(value: str) -> str:
    """``value`` with compose's ``${VAR:-default}`` replaced by the default (the value with
    no .env file)."""
    return INTERPOLATION.sub(lambda m: m[2] or "", value)


def problems_of_environment(
    env: Mapping[str, str], where: str, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Names that are no setting, and values the settings refuse (built as the processes
    build them, from exactly this environment)."""
    found = [
        f"{where}: {name} is not a setting"
        for name in sorted(env)
        if name.startswith((MMSERVE_PREFIX, "AWS_")) and name not in setting_names()
    ]
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith((MMSERVE_PREFIX, "AWS_"))]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, interpolated(str(value)))
        try:
            Settings(_env_file=None)
        except ValidationError as err:
            for problem in err.errors():
                field = ".".join(str(p) for p in problem["loc"])
                found.append(f"{where}: setting {field}: {problem['msg']}")
    return found


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "", parsed.port or default_port


@functools.cache
def routes() -> frozenset[str]:
    """The paths the HTTP app answers (built in process on an empty store)."""
    with tempfile.TemporaryDirectory() as store:
        http = create_app(Settings(_env_file=None, store_url=store))
        return frozenset(str(getattr(r, "path", "")) for r in http.routes)


def http_check(command: str) -> tuple[int, str] | None:
    """The port and path of the ``http://127.0.0.1:PORT/PATH`` a health check asks."""
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[\w/.-]*)", command)
    return (int(match[1]), match[2]) if match else None
