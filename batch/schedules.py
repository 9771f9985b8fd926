"""Scheduled batch runs, from a YAML file (``MMSERVE_SCHEDULES``) that ``mmserve beat`` reads::

    - name: nightly-churn
      cron: "0 2 * * *"              # minute hour day-of-month month day-of-week (UTC)
      spec:
        model: churn@production
        input: s3://bucket/customers/
        output: s3://bucket/scores/{date}/
        id_column: customer_id

``every: 3600`` (seconds) instead of ``cron`` for a fixed interval. The output names when
the run fired (UTC, the beat's clock): ``{date}`` (``2026-11-23``), ``{time}`` (``021500``),
``{datetime}`` (``20261123T021500Z``). A run's id comes from its name and output, so the same
firing delivered twice resumes its run instead of starting another. A schedule whose output
would repeat, and so resume a finished run and score nothing, is refused at load: every
firing of ``every: 900`` needs ``{datetime}`` (or ``{date}`` and ``{time}``); ``{date}`` alone
is for at most one firing a day.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from batch.spec import BatchSpec
from serving.errors import InvalidSchedules

SCHEDULED_TASK = "mmserve.batch.scheduled"


class Schedule(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    cron: str | None = None
    every: float | None = Field(None, gt=0)
    spec: BatchSpec

    @model_validator(mode="after")
    def _one_timing(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"schedule {self.name!r}: give either cron or every")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError(f"schedule {self.name!r}: cron takes 5 fields, got {self.cron!r}")
        repeats = _repeats(self.spec.output, self._shortest_gap())
        if repeats is not None:
            raise ValueError(
                f"schedule {self.name!r} fires {self._when()}, but its output {repeats}: put "
                "{datetime} in it (or {date} and {time}), so that each firing scores into "
                "its own output instead of resuming a finished run"
            )
        return self

    def _shortest_gap(self) -> float:
        """Seconds between two firings, at the least (a day for a cron firing at most daily)."""
        if self.every is not None:
            return self.every
        timing = self.timing()
        return DAY if len(timing.minute) * len(timing.hour) == 1 else 60.0

    def _when(self) -> str:
        if self.every is not None:
            return f"every {self.every:g} s"
        if self._shortest_gap() >= DAY:
            return f"on cron {self.cron!r}"
        return f"more than once a day (cron {self.cron!r})"

    def timing(self) -> Any:
        """Celery beat's schedule object."""
        if self.every is not None:
            return timedelta(seconds=self.every)
        from celery.schedules import crontab

        minute, hour, day, month, weekday = (self.cron or "").split()
        return crontab(minute, hour, weekday, day, month)

    def run_of(self, when: datetime) -> tuple[BatchSpec, str]:
        """The spec of the run firing at ``when``, and its id."""
        when = when.astimezone(UTC)
        output = self.spec.output
        for placeholder, form in _PLACEHOLDERS.items():
            output = output.replace(placeholder, when.strftime(form))
        run_id = hashlib.sha256(f"{self.name}\n{output}".encode()).hexdigest()[:32]
        return self.spec.model_copy(update={"output": output}), run_id


def load(path: Path) -> list[Schedule]:
    """The schedules ``path`` lists; :class:`InvalidSchedules` says which one is refused and why."""
    try:
        listed = yaml.safe_load(path.read_text()) or []
        return TypeAdapter(list[Schedule]).validate_python(listed)
    except (OSError, yaml.YAMLError) as err:
        raise InvalidSchedules(str(path), f"cannot read it: {err}") from None
    except ValidationError as err:
        reasons = [_reason(e) for e in err.errors(include_url=False)]
        raise InvalidSchedules(str(path), "; ".join(reasons)) from None


def fired_now() -> str:
    """When the beat sends a firing (called by the beat for each message, see workers/app.py):
    the time the run's output is named after, the same however late a worker takes it."""
    return datetime.now(UTC).isoformat()


DAY = 86400.0
_PLACEHOLDERS = {"{datetime}": "%Y%m%dT%H%M%SZ", "{date}": "%Y-%m-%d", "{time}": "%H%M%S"}


def _repeats(output: str, gap: float) -> str | None:
    """How ``output`` repeats over firings ``gap`` seconds apart at least; None if it never does."""
    dated, timed = "{date}" in output, "{time}" in output
    if "{datetime}" in output or (dated and timed):
        return None if gap >= 1 else "changes once a second ({datetime})"
    if timed:
        return "repeats every day ({time} without {date})"
    if dated:
        return None if gap >= DAY else "changes once a day ({date})"
    return "is the same at every firing"


def _reason(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return message if error["type"] == "value_error" else f"{where}: {message}"
