"""Endpoints files: YAML validated into :class:`EndpointsFile`, each refusal naming its line.

PyYAML keeps where every node starts (``yaml.compose``); pydantic says which value it
refused (an error's ``loc``). Joining the two gives ``endpoints.yaml line 7:
endpoints.churn.variants[1].weight: Input should be greater than or equal to 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from serving.endpoints.config import EndpointsFile
from serving.errors import InvalidEndpoints

Path_ = tuple[str, ...]


def load(path: Path) -> EndpointsFile:
    """The endpoints ``path`` declares; :class:`InvalidEndpoints` names the line and reason."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidEndpoints(str(path), None, f"cannot read it: {err}") from None
    return parse(text, str(path))


def parse(text: str, source: str = "endpoints file") -> EndpointsFile:
    """The endpoints ``text`` declares (``source`` names it in errors)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise InvalidEndpoints(source, line, f"not valid YAML: {err.problem}") from None
    except yaml.YAMLError as err:
        raise InvalidEndpoints(source, None, f"not valid YAML: {err}") from None
    lines: dict[Path_, int] = {}
    if root is not None:
        _lines(root, (), lines, source)
    try:
        return EndpointsFile.model_validate({} if data is None else data)
    except ValidationError as err:
        raise _refusal(err, lines, source) from None


def _lines(node: yaml.Node, path: Path_, lines: dict[Path_, int], source: str) -> None:
    """Record the line (1-based) of every value under ``node``; a mapping's entries at their
    key's line (a nested block starts on the line after it). Repeated keys are refused:
    YAML would keep the last one silently."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                where = ".".join((*path, name))
                raise InvalidEndpoints(source, key.start_mark.line + 1, f"{where}: repeated key")
            seen.add(name)
            lines[(*path, name)] = key.start_mark.line + 1
            _lines(value, (*path, name), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, str(index)), lines, source)


def _refusal(err: ValidationError, lines: dict[Path_, int], source: str) -> InvalidEndpoints:
    problems = []
    for error in err.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"] if part != "[key]")
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
        problems.append((line, f"{_where(error['loc'])}{_reason(error)}"))
    (line, reason), *others = problems
    more = "".join(f"; line {other_line}: {other}" for other_line, other in others)
    return InvalidEndpoints(source, line, reason + more)


def _where(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if part == "[key]":
            text += " (the name)"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return f"{text}: " if text else ""


def _reason(error: Any) -> str:
    if error["type"] == "model_type" and not error["loc"]:
        return "expected a mapping: 'endpoints: {name: {variants: [...]}}'"
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "string_pattern_mismatch":
        return "use 1-64 characters: a-z, 0-9, '.', '_', '-', starting with a letter or digit"
    return str(error["msg"]).removeprefix("Value error, ")
