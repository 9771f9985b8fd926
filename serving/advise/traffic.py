"""An endpoint's real traffic, read from its data capture (``capture/<endpoint>/...``,
written by the servers: :mod:`serving.endpoints.capture`), as requirements to advise on.

From the captured requests (the ``primary`` rows; a shadow's are the same requests again):

- the request rate, over the whole minutes the capture spans, divided by the fraction of
  requests the endpoint captures (its ``capture.sample``, and its shadow's if that captures);
- the pattern: ``rare`` when the endpoint would sit idle (no request for longer than the
  serverless idle TTL) at least ``advise.idle_share`` of the time, else ``spiky`` when the
  busiest minute holds ``advise.spike_factor`` times the average and the per-minute counts
  vary that much more than chance would make them (variance over mean), else ``steady``;
- the payload: the largest request's inputs as compact JSON;
- the processing time: the 99th percentile of the answers' latency.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serving.advise.model import MB, Pattern, duration
from serving.endpoints import capture
from serving.endpoints.catalog import Endpoints
from serving.errors import EndpointNotFound, NoCapture
from serving.settings import Settings
from serving.store import Store


@dataclass(frozen=True, slots=True)
class Traffic:
    """What an endpoint's capture shows."""

    endpoint: str
    requests: int
    """Captured requests (not rows)."""
    sample: float
    """The fraction of requests the endpoint captures (1.0 when unknown)."""
    start: datetime
    end: datetime
    rps: float
    """Requests per second over the capture's minutes, sampling accounted for."""
    pattern: Pattern
    why: str
    """The counts that made the pattern."""
    payload_mb: float
    latency_p50_ms: float
    latency_p99_ms: float

    def requirements(self) -> dict[str, Any]:
        """The requirements this traffic shows (flags given by hand override them)."""
        return {
            "rps": self.rps,
            "pattern": self.pattern,
            "payload_mb": self.payload_mb,
            "processing_s": self.latency_p99_ms / 1000,
            "input": "requests",
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"], data["end"] = self.start.isoformat(), self.end.isoformat()
        return data


def read_traffic(store: Store, endpoint: str, settings: Settings) -> Traffic:
    """The traffic of ``endpoint``, from its capture in ``store``."""
    return traffic_of(capture.read(store, endpoint), endpoint, _sample(store, endpoint), settings)


def traffic_of(table: pa.Table, endpoint: str, sample: float, settings: Settings) -> Traffic:
    """The traffic in ``table`` (rows of :data:`capture.SCHEMA`), a ``sample`` of it."""
    primary = table.filter(pc.equal(table["role"], "primary"))
    if primary.num_rows == 0:
        raise NoCapture(endpoint, capture.ROOT)
    sized = primary.append_column("bytes", pc.binary_length(primary["input"]))
    # One request is the rows captured together: one inference id at one time (clients may
    # reuse an id).
    requests = sized.group_by(["inference_id", "time"]).aggregate(
        [("bytes", "sum"), ("latency_ms", "max")]
    )
    times = np.sort(pc.cast(requests["time"], pa.int64()).to_numpy() / 1e6)
    latency = requests["latency_ms_max"].to_numpy()
    minute = np.floor(times / 60).astype(np.int64)
    counts = np.bincount(minute - minute[0])
    seconds = len(counts) * 60
    pattern, why = _pattern(times, counts, sample, settings)
    return Traffic(
        endpoint=endpoint,
        requests=len(times),
        sample=sample,
        start=datetime.fromtimestamp(times[0], UTC),
        end=datetime.fromtimestamp(times[-1], UTC),
        rps=len(times) / sample / seconds,
        pattern=pattern,
        why=why,
        payload_mb=float(pc.max(requests["bytes_sum"]).as_py()) / MB,
        latency_p50_ms=float(np.percentile(latency, 50)),
        latency_p99_ms=float(np.percentile(latency, 99)),
    )


def _pattern(
    times: np.ndarray, counts: np.ndarray, sample: float, settings: Settings
) -> tuple[Pattern, str]:
    ttl = settings.serverless.idle_ttl_s
    # A sample of the requests sees gaps 1/sample times longer than the traffic has.
    gaps = np.diff(times) * sample
    idle = float(np.clip(gaps - ttl, 0, None).sum()) / (len(counts) * 60)
    if idle >= settings.advise.idle_share:
        return "rare", f"no request for longer than {duration(ttl)} {idle:.0%} of the time"
    mean, peak = float(counts.mean()), int(counts.max())
    spread = float(counts.var()) / mean
    factor = settings.advise.spike_factor
    said = f"the busiest minute held {peak} requests, {peak / mean:.1f}x the average {mean:.3g}"
    if peak >= factor * mean and spread >= factor:
        return "spiky", said
    return "steady", said


def _sample(store: Store, endpoint: str) -> float:
    """The fraction of the endpoint's requests its capture holds: a request is captured
    when sampled for capture or, with a capturing shadow, for the shadow (independent
    draws). 1.0 when the endpoint is no longer applied."""
    try:
        config = Endpoints(store).config(endpoint)
    except EndpointNotFound:
        return 1.0
    kept = config.capture.sample if config.capture else 0.0
    shadow = config.shadow
    shadowed = shadow.sample if shadow is not None and shadow.capture else 0.0
    fraction = 1 - (1 - kept) * (1 - shadowed)
    return fraction if fraction > 0 else 1.0
