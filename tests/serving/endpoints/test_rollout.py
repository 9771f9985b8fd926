"""The rollout controller over a real store, reading Prometheus text as servers expose it
(made by prometheus-client itself); its clock and sleep are the test's, so steps take no
time. The real-server rollouts are in tests/serving/http/test_rollouts.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serving.endpoints import files
from serving.endpoints.catalog import Endpoints
from serving.endpoints.guardrails import Counts, Guardrails, Watch
from serving.endpoints.rollout import Controller, rollback
from serving.errors import MetricsUnavailable, RolloutInProgress
from serving.store import Store

FILE = """\
endpoints:
  churn:
    variants:
      - {name: blue, model: churn:1, weight: 100}
      - {name: green, model: churn:2, weight: 0}
  promo:
    variants:
      - {name: main, model: churn@champion}
"""


class Server:
    """A server's endpoint metrics; ``traffic`` says what each scrape finds new."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mmserve_endpoint_requests", "", ["endpoint", "variant", "model", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "mmserve_endpoint_request_seconds", "", ["endpoint", "variant", "model"],
            buckets=(0.01, 0.1, 1.0), registry=self.registry,
        )  # fmt: skip
        self.traffic: Callable[[Server], None] = lambda server: None
        self.up = True

    def answer(self, variant: str, model: str, outcome: str = "ok", seconds: float = 0.005) -> None:
        endpoint = "promo" if variant == "main" else "churn"
        self.requests.labels(endpoint, variant, model, outcome).inc()
        self.latency.labels(endpoint, variant, model).observe(seconds)

    def scrape(self, url: str) -> str:
        if not self.up:
            raise MetricsUnavailable(url, "connection refused")
        self.traffic(self)
        return generate_latest(self.registry).decode()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Endpoints, Server, Callable[..., Controller]]:
    endpoints = Endpoints(Store.from_url(str(tmp_path / "store")))
    endpoints.apply(files.parse(FILE))
    server = Server()
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    def controller(**guardrails: object) -> Controller:
        return Controller(
            endpoints, ["http://a"], Guardrails(**guardrails),  # type: ignore[arg-type]
            poll_s=1.0, sleep=sleep, clock=lambda: clock[0],
            watch=lambda servers, select: Watch(servers, select, fetch=server.scrape),
        )  # fmt: skip

    return endpoints, server, controller


def test_a_failing_canary_rolls_back_and_says_why(setup) -> None:  # type: ignore[no-untyped-def]
    endpoints, server, controller = setup
    server.answer("green", "churn:2", "server_error")  # before the rollout: not counted
    server.traffic = lambda s: [s.answer("green", "churn:2", "server_error") for _ in range(3)]
    decision = controller(max_error_rate=0.01, min_requests=5).shift(
        "churn", "green", "canary:10%,wait=30s"
    )
    state = endpoints.state("churn")
    assert (decision.outcome, decision.guardrail, decision.measured) == (
        "rolled_back",
        "error_rate",
        1.0,
    )
    assert decision.reason == "error rate 1 over 6 requests is above --max-error-rate 0.01"
    assert state.weights == {"blue": 100.0, "green": 0.0}
    assert state.rollout is None and state.last is not None and state.last.reason == decision.reason


def test_a_healthy_linear_shift_completes(setup) -> None:  # type: ignore[no-untyped-def]
    endpoints, server, controller = setup
    server.traffic = lambda s: s.answer("green", "churn:2")
    seen = []
    ctl = controller(min_requests=1)
    ctl.report = seen.append
    decision = ctl.shift("churn", "green", "linear:50%,every=2s")
    assert decision.outcome == "completed"
    assert endpoints.state("churn").weights == {"blue": 0.0, "green": 100.0}
    assert seen[:2] == ["step 1/2: green at 50%", "step 2/2: green at 100%"]


def test_a_slow_new_variant_breaches_p99(setup) -> None:  # type: ignore[no-untyped-def]
    endpoints, server, controller = setup
    server.traffic = lambda s: s.answer("green", "churn:2", seconds=0.5)
    decision = controller(max_p99_ms=200, min_requests=2).shift(
        "churn", "green", "all-at-once,bake=10s"
    )
    assert (decision.outcome, decision.guardrail, decision.limit) == ("rolled_back", "p99_ms", 200)
    assert decision.measured is not None and 100 < decision.measured <= 1000
    assert endpoints.state("churn").weights == {"blue": 100.0, "green": 0.0}


def test_unreadable_metrics_stop_it_before_any_weight_moves(setup) -> None:  # type: ignore[no-untyped-def]
    endpoints, server, controller = setup
    server.up = False
    with pytest.raises(MetricsUnavailable, match="cannot read the metrics of http://a"):
        controller().shift("churn", "green", "all-at-once")
    assert endpoints.state("churn").generation == 0


def test_metrics_lost_midway_roll_back(setup) -> None:  # type: ignore[no-untyped-def]
    endpoints, server, controller = setup

    def vanish(s: Server) -> None:
        s.up = False

    server.traffic = vanish
    with pytest.raises(MetricsUnavailable):
        controller().shift("churn", "green", "canary:10%,wait=30s")
    state = endpoints.state("churn")
    assert state.weights == {"blue": 100.0, "green": 0.0}
    assert state.last is not None and state.last.reason.startswith("stopped: MetricsUnavailable")


def test_one_rollout_at_a_time_and_a_rollback_by_hand_ends_it(setup) -> None:  # type: ignore[no-untyped-def]
    endpoints, server, controller = setup

    def meanwhile(s: Server) -> None:
        if endpoints.state("churn").rollout is None:
            return  # the baseline read, before the rollout begins
        s.traffic = lambda s: None
        with pytest.raises(RolloutInProgress, match="in a rollout \\(variant to green\\)"):
            controller().shift("churn", "blue", "all-at-once")
        rollback(endpoints, "churn")

    server.traffic = meanwhile
    decision = controller().shift("churn", "green", "canary:10%,wait=30s")
    assert (decision.outcome, decision.reason) == ("rolled_back", "rolled back by hand")
    assert endpoints.state("churn").weights == {"blue": 100.0, "green": 0.0}


def test_a_promotion_moves_the_alias_at_the_end_only(setup) -> None:  # type: ignore[no-untyped-def]
    endpoints, server, controller = setup
    moved: list[int] = []
    server.traffic = lambda s: s.answer("main", "churn:5")
    good = controller(min_requests=1).promote(
        "churn", "champion", 3, 5, "canary:50%,wait=2s", lambda: moved.append(5), 1.0
    )
    assert (good.outcome, moved) == ("completed", [5])
    assert endpoints.state("promo").rollout is None
    server.traffic = lambda s: s.answer("main", "churn:6", "server_error")
    bad = controller(min_requests=1).promote(
        "churn", "champion", 5, 6, "canary:50%,wait=2s", lambda: moved.append(6), 1.0
    )
    assert (bad.outcome, moved) == ("rolled_back", [5])
    assert endpoints.state("churn").last is None  # endpoints not serving the alias: untouched


def test_counts_read_a_restarted_server_as_new_traffic() -> None:
    before = Counts(10, 2, {0.1: 8, float("inf"): 10})
    after = Counts(3, 0, {0.1: 3, float("inf"): 3})
    assert after.since(before) == after
    grown = Counts(15, 2, {0.1: 12, float("inf"): 15})
    assert grown.since(before) == Counts(5, 0, {0.1: 4, float("inf"): 5})
    assert Counts(4, 0, {0.1: 2, 1.0: 4, float("inf"): 4}).quantile(0.5) == 0.1
    assert Counts(4, 0, {0.1: 2, 1.0: 4, float("inf"): 4}).quantile(0.75) == pytest.approx(0.55)


def test_a_callers_bad_requests_never_count_against_the_new_variant(setup) -> None:  # type: ignore[no-untyped-def]
    """4xx are the caller's: they are not the variant's errors, and do not make up the
    --min-requests that lets one server error decide (9 of them + 1 error was a rollback)."""
    endpoints, server, controller = setup
    failed_once: list[bool] = []

    def traffic(s: Server) -> None:
        if endpoints.state("churn").rollout is None:
            return  # the baseline read
        if not failed_once:
            s.answer("green", "churn:2", "server_error")
            failed_once.append(True)
        for _ in range(9):
            s.answer("green", "churn:2", "client_error")

    server.traffic = traffic
    decision = controller(max_error_rate=0.01, min_requests=10).shift(
        "churn", "green", "canary:10%,wait=5s"
    )
    assert (decision.outcome, decision.guardrail) == ("completed", None)
    assert endpoints.state("churn").weights == {"blue": 0.0, "green": 100.0}
