"""The features file: named per-key aggregates over sliding event-time windows.

    features:
      card_txn_count_60s: {key: card_id, agg: count, window: 60s}
      card_amount_sum_10m: {key: card_id, field: amount, agg: sum, window: 10m}
      account_distinct_payees_1h: {key: account_id, field: payee, agg: count_distinct, window: 1h}
    time: {field: ts, allowed_lateness: 30s}

A refusal names the feature and the field: ``features.yaml: features.card_amount_sum_10m.field:
agg 'sum' needs a field``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from serving.errors import InvalidFeatures

Agg = Literal["count", "sum", "mean", "min", "max", "count_distinct"]
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


def _ms(value: Any) -> Any:
    """A duration as whole milliseconds: ``30s``, ``10m``, ``1h``, ``500ms``, ``1d``, or a
    number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 10m, 1h")
    if isinstance(value, int | float):
        return round(value * 1000)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return round(float(match[1]) * _UNITS[match[2]])
    raise ValueError(f"not a duration (such as 30s, 10m, 1h): {value!r}")


LONGEST_MS = 3650 * 86_400_000
"""Ten years: a longer duration is no window a stream keeps, and past 2**63 ms Redis refuses
the state's expiry (a commit that could never succeed)."""
Millis = Annotated[int, BeforeValidator(_ms), Field(ge=0, le=LONGEST_MS)]


class Feature(BaseModel):
    """One aggregate: over the events of the same ``key`` whose event time is in the
    ``window`` that ends at this event's (the event itself included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1)
    """The event field the events are grouped by (a card id)."""
    agg: Agg
    field: str | None = Field(None, min_length=1)
    """The event field aggregated (none for ``count``)."""
    window: Millis

    @model_validator(mode="after")
    def _field_matches_agg(self) -> Feature:
        if self.window <= 0:
            raise ValueError("window: must be longer than 0")
        if ":" in self.key:  # card:id's 'x' and card's 'id:x' would share one state
            raise ValueError(
                "key: a key field's name holds no ':' (the state's keys are split by it)"
            )
        if self.agg == "count" and self.field is not None:
            raise ValueError("field: agg 'count' takes no field")
        if self.agg != "count" and self.field is None:
            raise ValueError(f"field: agg {self.agg!r} needs a field")
        return self


class Time(BaseModel):
    """Where an event's time comes from, and how late an event may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str | None = Field(None, min_length=1)
    """The event field holding its time (seconds since the epoch, or ISO 8601; from 1970 to
    9999); none: the entry id's time."""
    allowed_lateness: Millis = 0
    """How far behind its key's watermark (the latest event time seen) an event may be and
    still be added to the windows."""
    late: Literal["score", "dead_letter"] = "score"
    """What becomes of a later one: scored without being added, or dead-lettered."""


class FeatureSpec(BaseModel):
    """A features file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: dict[Annotated[str, Field(pattern=_NAME)], Feature] = Field(min_length=1)
    time: Time = Time()
    prefix: str = Field("mmserve:features", min_length=1)
    """The Redis keys of the state begin with it (a cluster: put a hash tag in it)."""
    idle_ttl: Millis = 86_400_000
    """A key's state with no event for this long (wall time) is dropped; no shorter than
    the longest window plus the lateness (refused), or a quiet key's windows would lose
    events they still hold."""

    @model_validator(mode="after")
    def _idle_ttl_outlasts_windows(self) -> FeatureSpec:
        longest = max(self.horizon(key) for key in self.by_key())
        if self.idle_ttl < longest:  # a quiet card's state gone while its windows need it
            raise ValueError(
                f"idle_ttl: {self.idle_ttl} ms is shorter than the longest window plus the "
                f"lateness ({longest} ms)"
            )
        return self

    def by_key(self) -> dict[str, list[str]]:
        """Each key field, and the names of the features grouped by it, in the file's order."""
        grouped: dict[str, list[str]] = {}
        for name, feature in self.features.items():
            grouped.setdefault(feature.key, []).append(name)
        return grouped

    def horizon(self, key: str) -> int:
        """How far (ms) behind a key's watermark its state is still needed: its longest
        window plus the lateness. Older state is expired."""
        windows = [f.window for f in self.features.values() if f.key == key]
        return max(windows) + self.time.allowed_lateness

    def fields(self, key: str) -> list[str]:
        """The event fields the features of ``key`` aggregate (kept in its state)."""
        named = {f.field for f in self.features.values() if f.key == key and f.field}
        return sorted(named)


def load(path: Path) -> FeatureSpec:
    """The features ``path`` declares; :class:`InvalidFeatures` names what is wrong."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidFeatures(str(path), f"cannot read it: {err}") from None
    return parse(text, str(path))


def parse(text: str, source: str = "features file") -> FeatureSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidFeatures(source, f"not valid YAML: {err}") from None
    try:
        return FeatureSpec.model_validate({} if data is None else data)
    except ValidationError as err:
        problems = [_problem(e) for e in err.errors(include_url=False)]
        raise InvalidFeatures(source, "; ".join(problems)) from None


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"] if part != "[key]")
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "string_pattern_mismatch":
        return f"{where}: a feature's name is a letter or '_', then letters, digits or '_'"
    message = str(error["msg"]).removeprefix("Value error, ")
    if message.partition(": ")[0] in Feature.model_fields:  # the feature's check, naming a field
        return f"{where}.{message}"
    return f"{where}: {message}" if where else message
