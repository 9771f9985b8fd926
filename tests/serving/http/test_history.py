"""The console's history of endpoint figures: what a variant's plots show between samples."""

from __future__ import annotations

from serving.http._history import History
from serving.http._metrics import Metrics


def _answered(metrics: Metrics, variant: str, outcome: str, seconds: float, times: int) -> None:
    for _ in range(times):
        metrics.endpoint_requests.labels("churn", variant, "lr:1", outcome).inc()
        if outcome == "ok":
            metrics.endpoint_latency.labels("churn", variant, "lr:1").observe(seconds)


def test_a_variants_points_are_its_rate_errors_and_quantiles_between_samples() -> None:
    metrics = Metrics(loaded_models=lambda: 0)
    now = iter([100.0, 105.0, 110.0])
    history = History(metrics, clock=lambda: next(now))
    _answered(metrics, "blue", "ok", 0.001, 3)  # before the first sample: not in any point
    history.sample()
    _answered(metrics, "blue", "ok", 0.003, 8)  # in the (2.5 ms, 5 ms] bucket
    _answered(metrics, "blue", "server_error", 0.0, 2)
    _answered(metrics, "green", "client_error", 0.0, 1)
    history.sample()
    history.sample()  # nothing between the last two
    assert history.series("churn") == {
        "blue": [
            {"t": 105.0, "rps": 2.0, "error_rate": 0.2, "p50_ms": 3.75, "p99_ms": 4.975},
            {"t": 110.0, "rps": 0.0, "error_rate": None, "p50_ms": None, "p99_ms": None},
        ],
        "green": [  # a client's error is not the variant's: no latency, no error rate
            {"t": 105.0, "rps": 0.2, "error_rate": 0.0, "p50_ms": None, "p99_ms": None},
            {"t": 110.0, "rps": 0.0, "error_rate": None, "p50_ms": None, "p99_ms": None},
        ],
    }
    assert history.series("other") == {}


def test_the_history_keeps_only_its_last_samples() -> None:
    metrics = Metrics(loaded_models=lambda: 0)
    now = iter(range(10))
    history = History(metrics, kept=3, clock=lambda: float(next(now)))
    for _ in range(10):
        _answered(metrics, "blue", "ok", 0.02, 1)
        history.sample()
    assert [p["t"] for p in history.series("churn")["blue"]] == [8.0, 9.0]
