"""Rollout strategies: how weight moves to the new variant (or version), step by step.

- ``all-at-once``: 100 % at once;
- ``canary:10%,wait=5m``: 10 % for 5 minutes, then 100 %;
- ``linear:20%,every=1m``: 20, 40, 60, 80 % a minute each, then 100 %.

Any of them takes ``bake=D``: a last hold at 100 % under the guardrails before the rollout
counts as done. Durations are a number and ``ms``, ``s``, ``m`` or ``h``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from serving.errors import InvalidName

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_RULE = (
    "use all-at-once, canary:<percent>%,wait=<duration> or linear:<percent>%,every=<duration>"
    " (durations like 30s, 5m, 1h; any of them may end with ,bake=<duration>)"
)


@dataclass(frozen=True, slots=True)
class Step:
    """Give the new side ``share`` percent, then watch the guardrails for ``hold_s``."""

    share: float
    hold_s: float


def parse(text: str) -> list[Step]:
    """The steps ``text`` describes; :class:`InvalidName` saying the grammar otherwise."""
    head, *options = [part.strip() for part in text.strip().split(",")]
    kind, _, size = head.partition(":")
    values = dict(_option(text, option) for option in options)
    bake = values.pop("bake", 0.0)
    if kind == "all-at-once" and not size:
        steps = [Step(100.0, bake)]
    elif kind in ("canary", "linear") and size:
        share = _percent(text, size)
        hold = values.pop("wait" if kind == "canary" else "every", None)
        if hold is None:
            raise InvalidName("rollout strategy", text, _RULE)
        shares = [share] if kind == "canary" else _linear(share)
        steps = [Step(s, hold) for s in shares if s < 100] + [Step(100.0, bake)]
    else:
        raise InvalidName("rollout strategy", text, _RULE)
    if values:
        raise InvalidName(
            "rollout strategy", text, f"unknown option {next(iter(values))!r}; {_RULE}"
        )
    return steps


def seconds(text: str) -> float:
    """``30s``, ``5m``, ``1h``, ``500ms`` in seconds."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise InvalidName("duration", text, "a number and ms, s, m or h: 30s, 5m, 1h")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _option(text: str, option: str) -> tuple[str, float]:
    name, equals, value = option.partition("=")
    if not equals:
        raise InvalidName("rollout strategy", text, _RULE)
    return name.strip(), seconds(value)


def _percent(text: str, size: str) -> float:
    number = size.strip().removesuffix("%")
    try:
        share = float(number)
    except ValueError:
        raise InvalidName("rollout strategy", text, _RULE) from None
    if not 0 < share <= 100:
        raise InvalidName("rollout strategy", text, "the step must be above 0 and at most 100%")
    return share


def _linear(step: float) -> list[float]:
    shares, share = [], step
    while share < 100 - 1e-9:
        shares.append(round(share, 6))
        share += step
    return shares
