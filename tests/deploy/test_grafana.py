"""deploy/grafana/mmserve.json and deploy/prometheus/ against real processes: every metric
an expression names is on the ``/metrics`` of a live ``mmserve serve`` (with a broker, an
endpoint with variants, a shadow and capture) or of a live ``mmserve stream
--metrics-port``, after a little traffic; a real Prometheus on prometheus.yml scrapes both,
evaluates every rule and answers every panel's query; the files pass ``promtool check``
and the rules their unit tests (``promtool test rules``)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.deploy.monitoring import (
    ALERT_TESTS,
    ALERTS,
    PROMETHEUS_CONFIG,
    alert_queries,
    alerts,
    dashboard,
    dashboard_queries,
    exposed,
    live_config,
    metric_names,
    panels,
    prometheus,
    query,
    unknown,
)
from tests.services import ensure_promtool, free_port, mmserve_server, redis_server
from tests.workers.streams import fields, mmserve_stream, produce, rows, wait_for

ENDPOINTS = """\
endpoints:
  churn:
    variants:
      - {name: blue, model: lr:1, weight: 50}
      - {name: green, model: lr:2, weight: 50}
    shadow: {model: lr:2, sample: 1.0}
    capture: {sample: 1.0}
    seed: 7
"""
CSV = "0.5,-1.25,2.0,0.0,3.5\n1.0,0.0,-2.0,0.5,1.5\n"


@dataclass
class Scrapes:
    server: str
    stream: str
    targets: dict[str, str]
    """The processes' ``host:port`` by the scrape job of deploy/prometheus/prometheus.yml."""


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrapes]:
    """One scrape of each process after its traffic: 6 requests to an endpoint (each
    shadowed and captured), a model's request, a refused one, an async job left queued (no
    worker), and 4 events of which one is bad."""
    tmp = tmp_path_factory.mktemp("grafana")
    store = str(tmp / "store")
    registry = Registry(Store.from_url(store))
    registry.register(fixtures.logistic(), "lr")
    registry.register(fixtures.logistic(), "lr")
    (tmp / "endpoints.yaml").write_text(ENDPOINTS)
    endpoints = {"MMSERVE_ENDPOINTS": str(tmp / "endpoints.yaml")}
    with redis_server() as broker, redis.Redis.from_url(broker.url) as r, ExitStack() as up:
        env = {"MMSERVE_STORE_URL": store, "MMSERVE_BROKER_URL": broker.url}
        port = free_port()
        args = ["--model", "lr", "--source", "events", "--sink", "scores", "--group", "g"]
        args += ["--start", "0", "--id-field", "id", "--metrics-port", str(port)]
        url, _ = together(
            up,
            mmserve_server({**env, **endpoints, "MMSERVE_DEPLOYMENT__CAPTURE_FLUSH_S": "0.1"}),
            mmserve_stream(env, tmp / "stream.log", *args),
        )
        with httpx.Client(base_url=url, timeout=30) as client:
            drive(client)
            events = [{"id": f"e{i}", **fields(row)} for i, row in enumerate(rows(3))]
            produce(r, "events", [*events, {"id": "bad", "f0": "abc"}])
            wait_for(lambda: r.xlen("scores") == 3 and r.xlen("scores-dlq") == 1, "scored")
            stream = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            targets = {"mmserve-api": url[7:], "mmserve-stream": f"127.0.0.1:{port}"}
            yield Scrapes(client.get("/metrics").text, stream, targets)


def together(stack: ExitStack, *processes: AbstractContextManager[Any]) -> list[Any]:
    """Start the processes at once (each takes seconds to import and load its model), each
    left on ``stack`` to stop: those that started, when one could not."""
    with ThreadPoolExecutor(len(processes)) as pool:
        starting = [pool.submit(p.__enter__) for p in processes]
    for process, started in zip(processes, starting, strict=True):
        if started.exception() is None:
            stack.push(process.__exit__)
    return [started.result() for started in starting]


def drive(client: httpx.Client) -> None:
    csv = {"content-type": "text/csv"}
    for _ in range(6):
        answer = client.post("/v1/endpoints/churn/invocations", content=CSV, headers=csv)
        assert answer.status_code == 200, answer.text
    assert client.post("/v1/models/lr:predict", json={"instances": [[0.0] * 5]}).status_code == 200
    assert (
        client.post("/v1/models/nope:predict", json={"instances": [[0.0] * 5]}).status_code == 404
    )
    job = client.post("/v1/models/lr/async", content=CSV, headers=csv)
    assert job.status_code == 202, job.text

    def settled() -> bool:  # the shadow scores and the capture writes after the answer
        text = client.get("/metrics").text
        shadowed = value(text, "mmserve_shadow_requests_total")
        return shadowed == 6 and value(text, "mmserve_capture_rows_total") == 24

    wait_for(settled, "6 shadow requests, and their 24 rows captured (2 a call of each side)")


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


# -- against live processes ----------------------------------------------------------------------


@pytest.mark.slow
def test_every_metric_the_dashboard_and_the_alerts_name_is_on_a_live_metrics_page(
    scrapes: Scrapes,
) -> None:
    known = exposed(scrapes.server) | exposed(scrapes.stream)
    assert unknown(dashboard_queries(), known) == []
    assert unknown(alert_queries(), known) == []


@pytest.mark.slow
def test_the_traffic_is_what_the_panels_show(scrapes: Scrapes) -> None:
    server, stream = scrapes.server, scrapes.stream
    by_variant = {
        v: value(server, "mmserve_endpoint_requests_total", variant=v, outcome="ok")
        for v in ("blue", "green")
    }
    assert by_variant == {"blue": 1, "green": 5}  # the endpoint's seed fixes the split
    assert value(server, "mmserve_endpoint_request_seconds_count") == 6
    assert value(server, "mmserve_shadow_requests_total", outcome="ok") == 6
    assert value(server, "mmserve_capture_rows_total", endpoint="churn") == 24
    assert value(server, "mmserve_requests_total", route="/v1/models/{ref}:predict") == 2
    assert value(server, "mmserve_requests_total", code="404") == 1
    assert value(server, "mmserve_errors_total") == 1
    assert value(server, "mmserve_cold_starts_total", model="lr") == 2  # lr:1 and lr:2
    assert value(server, "mmserve_models_loaded") == 2
    assert value(server, "mmserve_jobs_queued") == 1
    assert value(server, "mmserve_jobs_queue_age_seconds") > 0
    assert value(server, "mmserve_jobs_finished_total") == 0
    assert value(server, "mmserve_batch_runs_total") == 0
    assert value(stream, "mmserve_stream_events_total", model="lr", version="2") == 3
    assert value(stream, "mmserve_stream_lag_seconds_count") == 3
    assert value(stream, "mmserve_stream_dead_lettered_total") == 1


@pytest.mark.slow
def test_a_name_no_process_exposes_is_reported_where_it_is_used(scrapes: Scrapes) -> None:
    known = exposed(scrapes.server) | exposed(scrapes.stream)
    typo = [("alert X", "histogram_quantile(0.99, rate(mmserve_request_second_bucket[5m])) > 1")]
    assert unknown(typo, known) == ["alert X: mmserve_request_second_bucket"]


# -- the files -----------------------------------------------------------------------------------


def test_metric_names_are_the_selectors_not_functions_labels_or_keywords() -> None:
    expr = (
        'sum by (le, model) (rate(a_bucket{model=~"x", le!="1"}[5m] offset 1m)) '
        "/ on (model) group_left ignoring_not_a_keyword + max_over_time(b[1h:5m]) "
        'and {__name__="c", job="d"} unless bool_gauge'
    )
    assert metric_names(expr) == {"a_bucket", "ignoring_not_a_keyword", "b", "c", "bool_gauge"}


def test_every_panel_queries_the_datasource_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    for annotation in dashboard()["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_the_dashboard_shows_what_operators_look_for() -> None:
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    assert {
        "mmserve_endpoint_requests_total",  # requests by variant
        "mmserve_request_seconds_bucket",  # latency quantiles
        "mmserve_endpoint_request_seconds_bucket",
        "mmserve_batch_size_bucket",  # batch sizes
        "mmserve_cold_starts_total",
        "mmserve_jobs_queued",
        "mmserve_jobs_queue_age_seconds",
        "mmserve_jobs_finished_total",  # finished and failed, by status
        "mmserve_job_seconds_bucket",
        "mmserve_stream_lag_seconds_bucket",
        "mmserve_stream_dead_lettered_total",
        "mmserve_shadow_requests_total",
        "mmserve_batch_runs_total",  # batch runs by status, and their rows
        "mmserve_batch_rows_total",
    } <= shown
    quantiles = [t["expr"] for p in panels() for t in p["targets"] if "quantile" in t["expr"]]
    assert all(e.startswith("histogram_quantile(") and "_bucket" in e for e in quantiles)


def test_every_alert_waits_and_says_how_bad_and_why() -> None:
    rules = [r for g in alerts()["groups"] for r in g["rules"]]
    assert sorted(r["alert"] for r in rules) == [
        "MmserveBatchRunFailed",
        "MmserveErrorRateHigh",
        "MmserveJobQueueOld",
        "MmserveJobQueueStuck",
        "MmserveJobsFailing",
        "MmserveLatencyP99High",
        "MmserveStreamDeadLetters",
        "MmserveStreamLagHigh",
        "MmserveVariantErrorRateHigh",
    ]
    for rule in rules:
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = ensure_promtool()
    if path is None:
        pytest.skip("promtool is not installed and apt-get cannot install Debian's prometheus")
    return path


def test_promtool_checks_the_rules_and_the_config(promtool: str) -> None:
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert b"SUCCESS: 9 rules found" in checked.stdout
    config = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True
    )
    assert config.returncode == 0, config.stdout.decode() + config.stderr.decode()
    assert b"SUCCESS: 1 rule files found" in config.stdout


def test_the_rules_fire_as_their_unit_tests_say(promtool: str) -> None:
    tested = subprocess.run([promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True)
    assert tested.returncode == 0, tested.stdout.decode() + tested.stderr.decode()


def test_promtool_refuses_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("for: 5m", "for: 5 minutes", 1))
    checked = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True)
    assert checked.returncode == 1
    assert b'not a valid duration string: "5 minutes"' in checked.stderr + checked.stdout


# -- a real Prometheus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_url(
    scrapes: Scrapes, promtool: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Prometheus (Debian's package has it beside promtool) on deploy/prometheus/prometheus.yml,
    scraping the live processes."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian's prometheus package)")
    config = live_config(dict(scrapes.targets))
    with prometheus(binary, config, tmp_path_factory.mktemp("prometheus")) as url:
        yield url


@pytest.mark.slow
def test_a_real_prometheus_scrapes_both_processes_and_evaluates_every_rule(
    prometheus_url: str,
) -> None:
    targets = httpx.get(f"{prometheus_url}/api/v1/targets").json()["data"]["activeTargets"]
    assert sorted((t["labels"]["job"], t["health"]) for t in targets) == [
        ("mmserve-api", "up"),
        ("mmserve-stream", "up"),
    ]
    groups = httpx.get(f"{prometheus_url}/api/v1/rules").json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 9
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []
    assert [r["name"] for r in rules if r["state"] != "inactive"] == []  # nothing is wrong


@pytest.mark.slow
def test_every_panel_query_gives_series_on_a_real_prometheus(prometheus_url: str) -> None:
    empty = [where for where, expr in dashboard_queries() if not query(prometheus_url, expr)]
    assert empty == [  # no 5xx, no rollout, no row dropped: series a busier server has
        "panel 'Error ratio (5xx) by model' target A",
        "panel 'Rollout in progress' target B",
        "panel 'Captured and dropped rows' target B",
        "annotation 'Rollout decisions'",
    ]
