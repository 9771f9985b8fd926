"""What ``mmserve advise`` is asked and what it answers, and how it writes quantities."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["realtime", "serverless", "async", "batch", "streaming"]
MODES: tuple[Mode, ...] = ("realtime", "serverless", "async", "batch", "streaming")
Pattern = Literal["steady", "spiky", "rare"]
InputKind = Literal["requests", "dataset", "events"]
Hosting = Literal["single", "multi-model", "pipeline"]
MB = 1024 * 1024
"""A megabyte as mmserve's limits count it (6 MB is ``6 * 1024 * 1024`` bytes)."""
SECONDS_PER_MONTH = 730 * 3600
"""A month of 730 hours, as clouds bill one."""


class Requirements(BaseModel):
    """What the model's traffic needs; anything unknown is left ``None``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float | None = Field(None, gt=0)
    """How soon an answer is needed."""
    payload_mb: float | None = Field(None, ge=0)
    """Size of one request (or event, or the dataset's largest part), in MB."""
    rps: float | None = Field(None, ge=0)
    """Requests (rows, events) per second, averaged over the month."""
    pattern: Pattern | None = None
    """How the requests come: steady, spiky (bursts), rare (periods with none)."""
    processing_s: float | None = Field(None, ge=0)
    """Model time per request."""
    waiting: bool | None = None
    """Whether a person (or a client) waits for each answer."""
    input: InputKind | None = None
    """Requests one at a time, a dataset to score whole, or a stream of events."""
    models: int = Field(1, ge=1)
    """Distinct models served (of one framework): more than one means a multi-model endpoint."""
    chain: int = Field(1, ge=1)
    """Models applied in sequence per request (pre-processing -> prediction): a pipeline."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A mode's request limits (``None``: none), and the settings they come from."""

    max_payload_mb: float | None
    timeout_s: float | None
    payload_setting: str | None = None
    timeout_setting: str | None = None


@dataclass(frozen=True, slots=True)
class ModeView:
    """One mode, as the comparison shows it."""

    mode: Mode
    fits: bool
    """Within the mode's limits."""
    breaks: list[str]
    """The limits the requirements break, in words."""
    monthly_usd: float | None
    """Rough monthly cost at the unit prices (``None``: no ``rps`` to price)."""
    billing: str
    scales_to_zero: bool


@dataclass(frozen=True, slots=True)
class Advice:
    """The recommended mode, why, the limits that decided it, and every mode compared."""

    mode: Mode
    reasons: list[str]
    """The deciding reason first, then the facts that agree with it."""
    decided_by: list[str]
    """The facts (and the limits) that decided it: ``payload_mb>realtime.max_payload_mb``."""
    hosting: Hosting
    limits: dict[Mode, Limits]
    modes: list[ModeView]
    notes: list[str]
    requirements: Requirements
    traffic: dict[str, Any] | None = field(default=None)
    """What a capture showed, when the requirements were read from one."""

    def to_json(self) -> dict[str, Any]:
        """The advice as JSON-ready data (``mmserve advise --json``)."""
        data = asdict(self)
        data["requirements"] = self.requirements.model_dump()
        return data


def size(mb: float) -> str:
    """``500 MB``, ``1 GB``, ``0.5 MB``."""
    if mb >= 1024:
        return f"{_num(mb / 1024)} GB"
    return f"{_num(mb)} MB"


def duration(seconds: float) -> str:
    """``100 ms``, ``60 s``, ``2 min``, ``1 hour``."""
    if seconds >= 3600:
        hours = seconds / 3600
        return f"{_num(hours)} hour{'' if hours == 1 else 's'}"
    if seconds >= 120:
        return f"{_num(seconds / 60)} min"
    if seconds < 1:
        return f"{_num(seconds * 1000)} ms"
    return f"{_num(seconds)} s"


def rate(rps: float) -> str:
    """``10,000 req/s``, ``1.65 req/s``, ``15 req/day``."""
    if rps >= 1 or rps == 0:
        return f"{_num(rps)} req/s"
    if rps * 3600 >= 1:
        return f"{_num(rps * 3600)} req/hour"
    return f"{_num(rps * 86400)} req/day"


def money(usd: float) -> str:
    """``$8,395.00``; ``<$0.01`` for what rounds to nothing but is not free."""
    return "<$0.01" if 0 < usd < 0.005 else f"${usd:,.2f}"


def _num(x: float) -> str:
    """Three significant digits, thousands separated, no trailing zeros: 10,000 / 1.65 / 0.5."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    digits = max(0, 2 - math.floor(math.log10(abs(x))))
    text = f"{round(x, digits):,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
