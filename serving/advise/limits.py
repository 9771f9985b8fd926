"""Each mode's request limits, taken from mmserve's own settings (6 MB and 60 s for real time
and serverless, 1 GB and 1 hour for async by default, as the deployment documents give
them), and the ones a set of requirements breaks."""

from __future__ import annotations

from dataclasses import dataclass

from serving.advise.model import MB, Limits, Mode, Requirements, duration, size
from serving.settings import Settings

NO_LIMITS = Limits(None, None)


def limits_of(settings: Settings) -> dict[Mode, Limits]:
    """Every mode's limits. Serverless is the real-time server with idle models unloaded,
    so it has real time's; batch reads its input from the store in parts (no payload limit,
    no timeout); a stream consumer has none of its own."""
    realtime = Limits(
        settings.max_payload_bytes / MB,
        settings.request_timeout_s,
        "MMSERVE_MAX_PAYLOAD_BYTES",
        "MMSERVE_REQUEST_TIMEOUT_S",
    )
    jobs = Limits(
        settings.jobs.max_payload_bytes / MB,
        settings.jobs.time_limit_s,
        "MMSERVE_JOBS__MAX_PAYLOAD_BYTES",
        "MMSERVE_JOBS__TIME_LIMIT_S",
    )
    return {
        "realtime": realtime,
        "serverless": realtime,
        "async": jobs,
        "batch": NO_LIMITS,
        "streaming": NO_LIMITS,
    }


@dataclass(frozen=True, slots=True)
class Breach:
    """A requirement past a limit: ``key`` names both (``payload_mb>async.max_payload_mb``)."""

    key: str
    message: str


def breaches(req: Requirements, limits: Limits, modes: str, prefix: str) -> list[Breach]:
    """The limits of ``limits`` (of the ``modes``, in words; ``prefix`` in keys) that
    ``req`` breaks: its payload, its processing time."""
    found = []
    payload, cap = req.payload_mb, limits.max_payload_mb
    if payload is not None and cap is not None and payload > cap:
        found.append(
            Breach(
                f"payload_mb>{prefix}.max_payload_mb",
                f"a {size(payload)} payload exceeds the {size(cap)} limit of {modes} "
                f"({limits.payload_setting})",
            )
        )
    took, timeout = req.processing_s, limits.timeout_s
    if took is not None and timeout is not None and took > timeout:
        found.append(
            Breach(
                f"processing_s>{prefix}.timeout_s",
                f"{duration(took)} of processing exceeds the {duration(timeout)} timeout of "
                f"{modes} ({limits.timeout_setting})",
            )
        )
    return found
