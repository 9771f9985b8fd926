"""What the Grafana dashboard and the Prometheus alert rules are checked against: the
metric names their PromQL expressions select (parsed by a PromQL parser, so functions,
labels, keywords and durations are never taken for names), the names a scrape of
``/metrics`` exposes, and a real Prometheus scraping live processes."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.services import free_port, stop
from tests.workers.streams import wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "mmserve.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"

# Grafana's interval variables stand for a duration, the others (ours) for a label value.
_INTERVAL = re.compile(
    r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}"
)
_VARIABLE = re.compile(r"\$\{\w+\}|\$\w+")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")
# The samples each type of metric family exposes, by suffix of its name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


@functools.cache
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


@functools.cache
def alerts() -> dict[str, Any]:
    return dict(yaml.safe_load(ALERTS.read_text()))


def panels(board: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too (rows themselves are not panels)."""
    for panel in (board or dashboard())["panels"]:
        if panel["type"] == "row":
            yield from panels({"panels": panel.get("panels", [])})
        else:
            yield panel


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, annotation and query variable, as Prometheus
    gets it once Grafana has put its variables in."""
    found = [
        (f"panel {p['title']!r} target {t['refId']}", promql(t["expr"]))
        for p in panels()
        for t in p["targets"]
    ]
    found += [
        (f"annotation {a['name']!r}", promql(a["expr"]))
        for a in dashboard()["annotations"]["list"]
        if "expr" in a
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = _LABEL_VALUES.match(text)
            assert match, f"variable {variable['name']}: not label_values(...): {text}"
            if match[1]:
                found.append((f"variable {variable['name']}", promql(match[1])))
    return found


def alert_queries() -> list[tuple[str, str]]:
    return [
        (f"alert {rule['alert']}", rule["expr"])
        for group in alerts()["groups"]
        for rule in group["rules"]
    ]


def promql(grafana_expr: str) -> str:
    """A panel's expression with Grafana's variables replaced by what they stand for."""
    return _VARIABLE.sub(".*", _INTERVAL.sub("5m", grafana_expr))


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: its vector selectors' names (``{__name__="x"}``
    too)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def exposed(text: str) -> set[str]:
    """The sample names a ``/metrics`` answer exposes: those it has samples of, and those
    its families' types give (a family with labels has no sample until it is first used)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def unknown(queries: list[tuple[str, str]], known: set[str]) -> list[str]:
    """``where: name`` of every metric a query names that is not in ``known``."""
    return [
        f"{where}: {name}"
        for where, expr in queries
        for name in sorted(metric_names(expr))
        if name not in known
    ]


PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"


def live_config(targets: dict[str, str]) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with each job's target replaced by ``targets[job]``,
    its rule files found beside it from anywhere, and a scrape and an evaluation every
    half second (a test cannot wait the 15 s of the file)."""

    config = dict(yaml.safe_load(PROMETHEUS_CONFIG.read_text()))
    config["global"] = {"scrape_interval": "500ms", "evaluation_interval": "500ms"}
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / f) for f in config["rule_files"]]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets.pop(job["job_name"])]}]
    assert not targets, f"no scrape job in {PROMETHEUS_CONFIG.name} for {sorted(targets)}"
    return config


@contextmanager
def prometheus(binary: str, config: dict[str, Any], folder: Path) -> Iterator[str]:
    """A real Prometheus on ``config`` on a free loopback port, once it has scraped every
    target three times (rate() needs two samples); yields its base URL."""
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{free_port()}"
    argv = [binary, f"--config.file={folder / 'prometheus.yml'}"]
    argv += [f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address={base[7:]}"]
    with (folder / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: scraped(base, proc) >= 3, "prometheus scraping every target 3 times")
        yield base
    finally:
        stop(proc)


def scraped(base: str, proc: subprocess.Popen[bytes]) -> float:
    """Scrapes of the target scraped least (0 before Prometheus is ready)."""
    if proc.poll() is not None:
        raise RuntimeError(f"prometheus exited with {proc.returncode}")
    try:
        if httpx.get(f"{base}/-/ready", timeout=5).status_code != 200:
            return 0  # starting: its API answers 503, not JSON
    except httpx.HTTPError:
        return 0
    result = query(base, "min(count_over_time(up[1m]))")
    return float(result[0]["value"][1]) if result else 0


def query(base: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector ``expr`` gives now; an error Prometheus names fails the test."""
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
    return list(answer["data"]["result"])
