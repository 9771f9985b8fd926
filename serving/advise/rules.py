"""The decision: requirements in, one mode out, with its reasons.

The rules are tried in order; the first that decides sets the mode, and every later rule
that picks the same mode adds its reason (the MRI scan is async because of its size, its
time, and because no one waits). The order puts what cannot bend first:

1. the data is a dataset to score whole                      -> batch
2. a request past async's limits (1 GB, 1 hour)               -> batch
3. a request past real time's (6 MB, 60 s) or slower than a
   synchronous request should be (10 s)                       -> async
4. the data is a stream of events                             -> streaming
5. no one waits for the answer (or the target allows minutes) -> async
6. a latency target below a serverless cold start             -> real time
7. the traffic: rare -> serverless; spiky -> serverless unless real time is cheaper at
   that volume; steady -> real time unless serverless is cheaper; unknown -> the cheaper
   of the two given a rate, else real time (someone waits, within its limits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from serving.advise.costs import BILLING, SCALES_TO_ZERO, monthly
from serving.advise.limits import breaches, limits_of
from serving.advise.model import (
    MODES,
    Advice,
    Hosting,
    Limits,
    Mode,
    ModeView,
    Requirements,
    duration,
    money,
    rate,
    size,
)
from serving.advise.notes import notes
from serving.settings import Settings

REALTIME = "real time and serverless"


@dataclass(frozen=True, slots=True)
class Decision:
    mode: Mode
    reasons: list[str]
    decided_by: list[str]


@dataclass(frozen=True, slots=True)
class Case:
    """The requirements, with what every rule looks at already worked out."""

    req: Requirements
    settings: Settings
    limits: dict[Mode, Limits]
    costs: dict[Mode, float | None]


Rule = Callable[[Case], Decision | None]


def advise(req: Requirements, settings: Settings) -> Advice:
    """The mode for ``req``, with the reasons, the limits that decided it (from
    ``settings``) and every mode's limits and rough monthly cost."""
    case = Case(req, settings, limits_of(settings), monthly(req, settings.advise))
    decisions = [d for rule in RULES if (d := rule(case)) is not None]
    first = decisions[0]  # the traffic rule always decides
    reasons = list(first.reasons)
    for later in decisions[1:]:
        if later.mode == first.mode:
            reasons += [r for r in later.reasons if r not in reasons]
    return Advice(
        mode=first.mode,
        reasons=reasons,
        decided_by=first.decided_by,
        hosting=_hosting(req),
        limits=dict(case.limits),
        modes=[_view(case, mode) for mode in MODES],
        notes=notes(req, settings, first.mode, case.costs),
        requirements=req,
    )


def _dataset(c: Case) -> Decision | None:
    if c.req.input != "dataset":
        return None
    return Decision(
        "batch",
        [
            "the data is a dataset to score whole (input=dataset), not requests arriving: "
            "a batch transform reads it from the store in parts, with no payload limit and "
            "no timeout, and runs only while it lasts"
        ],
        ["input=dataset"],
    )


def _beyond_async(c: Case) -> Decision | None:
    found = breaches(c.req, c.limits["async"], "async jobs", "async")
    if not found:
        return None
    reasons = [b.message for b in found]
    reasons.append(
        "batch has no such limit: put the data in the store and score it as a batch "
        "transform, in parts"
    )
    return Decision("batch", reasons, [b.key for b in found])


def _beyond_realtime(c: Case) -> Decision | None:
    found = breaches(c.req, c.limits["realtime"], REALTIME, "realtime")
    keys, reasons = [b.key for b in found], [b.message for b in found]
    slow, took = c.settings.advise.slow_request_s, c.req.processing_s
    if took is not None and took > slow and not any(k.startswith("processing_s") for k in keys):
        keys.append("processing_s>advise.slow_request_s")
        reasons.append(
            f"{duration(took)} of processing per request is too slow for a synchronous "
            f"request (past {duration(slow)}, MMSERVE_ADVISE__SLOW_REQUEST_S): it would "
            "hold the connection, and the client, that long"
        )
    if not keys:
        return None
    jobs = c.limits["async"]
    assert jobs.max_payload_mb is not None and jobs.timeout_s is not None
    reasons.append(
        f"async takes it: up to {size(jobs.max_payload_mb)} and {duration(jobs.timeout_s)} per "
        "job (MMSERVE_JOBS__MAX_PAYLOAD_BYTES, MMSERVE_JOBS__TIME_LIMIT_S), the input and "
        "the answer kept in the store, a token to poll or a callback"
    )
    return Decision("async", reasons, keys)


def _events(c: Case) -> Decision | None:
    if c.req.input != "events":
        return None
    return Decision(
        "streaming",
        [
            "the data is a continuous stream of events (input=events): a stream consumer "
            "scores them as they arrive, in micro-batches, in ms to seconds, in order; more "
            "consumers in its group share the load"
        ],
        ["input=events"],
    )


def _nobody_waits(c: Case) -> Decision | None:
    timeout = c.limits["realtime"].timeout_s
    if c.req.waiting is False:
        why, key = "no one waits for the answer (waiting=false)", "waiting=false"
    elif c.req.latency_ms is not None and timeout and c.req.latency_ms / 1000 >= timeout:
        why = f"the answer may take {duration(c.req.latency_ms / 1000)}"
        key = "latency_ms>=realtime.timeout_s"
    else:
        return None
    return Decision(
        "async",
        [
            f"{why}: queue the requests as async jobs; workers scale with the queue, to "
            "zero when it is empty, and each answer waits in the store"
        ],
        [key],
    )


def _cold_start(c: Case) -> Decision | None:
    cold, target = c.settings.advise.cold_start_ms, c.req.latency_ms
    if target is None or target >= cold:
        return None
    return Decision(
        "realtime",
        [
            f"a {duration(target / 1000)} latency target is below a serverless cold start "
            f"(~{duration(cold / 1000)}, MMSERVE_ADVISE__COLD_START_MS): only instances kept "
            "warm answer that fast every time"
        ],
        ["latency_ms<advise.cold_start_ms"],
    )


def _traffic(c: Case) -> Decision:
    pattern, rps = c.req.pattern, c.req.rps
    realtime, serverless = c.costs["realtime"], c.costs["serverless"]
    if pattern == "rare":
        return Decision(
            "serverless",
            [
                "traffic is rare, with periods of none (pattern=rare): serverless scales to "
                "zero and costs nothing while idle; the first request after a pause loads "
                "the model (a cold start)"
            ],
            ["pattern=rare"],
        )
    if rps is None or realtime is None or serverless is None:
        if pattern == "spiky":
            return Decision("serverless", [_SPIKY], ["pattern=spiky"])
        if pattern == "steady":
            return Decision("realtime", [_STEADY], ["pattern=steady"])
        return _someone_waits(c)
    costs = f"{money(realtime)} a month for real time against {money(serverless)} serverless"
    given = [f"pattern={pattern}"] if pattern else []
    if pattern == "spiky" and serverless <= realtime:
        return Decision("serverless", [f"{_SPIKY} ({costs})"], given)
    if realtime < serverless:
        return Decision(
            "realtime",
            [f"{pattern or 'the'} traffic of {rate(rps)} justifies persistent instances: {costs}"],
            [*given, "cost:realtime<serverless"],
        )
    return Decision(
        "serverless",
        [
            f"at {rate(rps)} the volume does not justify persistent instances: {costs} "
            "(serverless is billed per request, nothing while idle)"
        ],
        [*given, "cost:serverless<=realtime"],
    )


_SPIKY = (
    "traffic is spiky (pattern=spiky): serverless follows the bursts and costs nothing between them"
)
_STEADY = (
    "traffic is steady (pattern=steady): persistent instances, autoscaled, answer in ms "
    "and never start cold"
)


def _someone_waits(c: Case) -> Decision:
    if c.req.waiting:
        return Decision(
            "realtime",
            [
                "a person waits for each answer (waiting=true) and the request fits real "
                "time's limits: answer it synchronously, in ms to seconds"
            ],
            ["waiting=true"],
        )
    return Decision(
        "realtime",
        ["nothing asks for another mode: requests within real time's limits are answered at once"],
        ["default"],
    )


RULES: list[Rule] = [
    _dataset,
    _beyond_async,
    _beyond_realtime,
    _events,
    _nobody_waits,
    _cold_start,
    _traffic,
]


def _view(c: Case, mode: Mode) -> ModeView:
    broken = breaches(c.req, c.limits[mode], mode, mode)
    cost = c.costs[mode]
    return ModeView(
        mode=mode,
        fits=not broken,
        breaks=[b.message for b in broken],
        monthly_usd=None if cost is None else round(cost, 6),  # to the micro-dollar
        billing=BILLING[mode],
        scales_to_zero=SCALES_TO_ZERO[mode],
    )


def _hosting(req: Requirements) -> Hosting:
    if req.chain > 1:
        return "pipeline"
    return "multi-model" if req.models > 1 else "single"
