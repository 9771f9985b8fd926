"""A rough monthly cost of each mode, from unit prices (``MMSERVE_ADVISE__*``), by the
billing models of the deployment documents' table:

- real time: instances always on, enough for the traffic (spiky: for its peaks), at least
  one: per instance-hour;
- serverless: per request, its duration times the memory, plus a request fee; nothing
  while idle;
- async: instances only while jobs run (the queue scales them, to zero): busy instance-hours;
- batch: instances only while a run lasts (ephemeral, per job): busy instance-hours;
- streaming: consumers always running, enough for the events, at least one.

Rough on purpose: the point is the order of magnitude between modes, not a bill.
"""

from __future__ import annotations

import math

from serving.advise.model import SECONDS_PER_MONTH, Mode, Requirements
from serving.settings import AdviseSettings

BILLING: dict[Mode, str] = {
    "realtime": "per instance-hour, always on",
    "serverless": "per request: duration x memory",
    "async": "per busy instance-hour (scales to zero)",
    "batch": "per job duration",
    "streaming": "per instance-hour, always running",
}
SCALES_TO_ZERO: dict[Mode, bool] = {
    "realtime": False,
    "serverless": True,
    "async": True,
    "batch": True,
    "streaming": False,
}
HOURS = SECONDS_PER_MONTH / 3600


def monthly(req: Requirements, prices: AdviseSettings) -> dict[Mode, float | None]:
    """Each mode's monthly cost in USD; ``None`` everywhere without a request rate."""
    if req.rps is None:
        return dict.fromkeys(BILLING)
    per_request_s = processing_s(req, prices)
    busy_hours = req.rps * SECONDS_PER_MONTH * per_request_s / prices.instance_concurrency / 3600
    return {
        "realtime": instances(req, prices, peak=True) * HOURS * prices.instance_hour_usd,
        "serverless": serverless(req, prices),
        "async": busy_hours * prices.instance_hour_usd,
        "batch": busy_hours * prices.instance_hour_usd,
        "streaming": instances(req, prices, peak=False) * HOURS * prices.instance_hour_usd,
    }


def instances(req: Requirements, prices: AdviseSettings, peak: bool) -> int:
    """Instances that keep up with the traffic (spiky traffic's peaks if ``peak``), at
    least one: what an always-on mode keeps running."""
    rps = req.rps or 0.0
    if peak and req.pattern == "spiky":
        rps *= prices.spike_factor
    busy = rps * processing_s(req, prices) / prices.instance_concurrency
    return max(1, math.ceil(busy - 1e-9))  # 2.0000000001 instances' worth is 2


def serverless(req: Requirements, prices: AdviseSettings) -> float:
    requests = (req.rps or 0.0) * SECONDS_PER_MONTH
    per_request = (
        processing_s(req, prices) * prices.serverless_memory_gb * prices.serverless_gb_second_usd
        + prices.serverless_request_usd
    )
    return requests * per_request


def processing_s(req: Requirements, prices: AdviseSettings) -> float:
    return req.processing_s if req.processing_s is not None else prices.processing_s
