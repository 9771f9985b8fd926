"""Scheduled batch runs, from a YAML file (``MMSERVE_SCHEDULES``) that ``mmserve beat`` reads::

    - name: nightly-churn
      cron: "0 2 * * *"              # minute hour day-of-month month day-of-week (UTC)
      spec:
        model: churn@production
        input: s3://bucket/customers/
        output: s3://bucket/scores/{date}/
        id_column: customer_id

``every: 3600`` (seconds) instead of ``cron`` for a fixed interval. ``{date}`` in the output
is the day the run fires (UTC, ``2026-11-23``). A run's id comes from its name and output, so
a schedule that fires twice for one output resumes the run instead of starting another.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, TypeAdapter, model_validator

from batch.spec import BatchSpec

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
        return self

    def timing(self) -> Any:
        """Celery beat's schedule object."""
        if self.every is not None:
            return timedelta(seconds=self.every)
        from celery.schedules import crontab

        minute, hour, day, month, weekday = (self.cron or "").split()
        return crontab(minute, hour, weekday, day, month)

    def run_of(self, when: datetime) -> tuple[BatchSpec, str]:
        """The spec of the run firing at ``when``, and its id."""
        output = self.spec.output.replace("{date}", when.astimezone(UTC).date().isoformat())
        run_id = hashlib.sha256(f"{self.name}\n{output}".encode()).hexdigest()[:32]
        return self.spec.model_copy(update={"output": output}), run_id


def load(path: Path) -> list[Schedule]:
    return TypeAdapter(list[Schedule]).validate_python(yaml.safe_load(path.read_text()) or [])
