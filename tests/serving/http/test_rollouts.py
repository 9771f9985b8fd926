"""Rollouts as a user runs them: ``mmserve endpoints shift`` and ``mmserve models alias
--rollout`` in their own processes, against a real ``mmserve serve`` under live traffic.

Each rollout's outcome does not depend on timing: a failing canary holds for a minute
(it is rolled back after its first few failures, long before), a healthy one completes
whatever traffic it saw."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from serving import codecs
from serving.endpoints.catalog import Endpoints
from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server

pytestmark = pytest.mark.slow

MMSERVE = str(Path(sys.executable).with_name("mmserve"))
FILE = """\
endpoints:
  good:
    variants:
      - {name: blue, model: lr:1, weight: 100}
      - {name: green, model: lr:2, weight: 0}
  bad:
    variants:
      - {name: blue, model: lr:1, weight: 100}
      - {name: red, model: broken, weight: 0}
  promo:
    variants: [{name: main, model: lr@champion}]
  pinned:
    variants:
      - {name: blue, model: lr:1, weight: 100}
      - {name: green, model: lr:2, weight: 0}
"""
FAST = ["--interval", "0.2"]
TOKEN = "rollouts-admin"
ADMIN = {"authorization": f"Bearer {TOKEN}"}  # GET /v1/endpoints/{name} is management


@dataclass
class Server:
    url: str
    env: dict[str, str]
    registry: Registry
    endpoints: Endpoints
    client: httpx.Client

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MMSERVE, *args], env=self.env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("rollouts")
    store = Store.from_url(str(root / "store"))
    registry = Registry(store)
    x, y = fixtures.numeric_data(10)
    pickled: dict[str, Any] = {"flavor": "sklearn-pickle", "trust_pickle": True}
    registry.register(fixtures.logistic(), "lr", alias="champion")
    registry.register(fixtures.forest(), "lr")
    registry.register(fixtures.ErrorModel().fit(x, y), "lr", **pickled)  # lr:3 fails
    registry.register(fixtures.logistic(), "lr", approval="pending")  # lr:4 unapproved
    registry.register(fixtures.ErrorModel().fit(x, y), "broken", **pickled)
    (root / "endpoints.yaml").write_text(FILE)
    env = {
        **os.environ,
        "MMSERVE_STORE_URL": str(root / "store"),
        "MMSERVE_ADMIN_TOKEN": TOKEN,
        "MMSERVE_DEPLOYMENT__STATE_TTL_S": "0.2",
        "MMSERVE_REGISTRY__ALIAS_TTL_S": "0.2",
        "PYTHONPATH": os.getcwd(),  # the server unpickles tests.fixtures.ErrorModel
        "COLUMNS": "200",
    }
    applied = subprocess.run(
        [MMSERVE, "endpoints", "apply", str(root / "endpoints.yaml")],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert applied.stdout.split() == [
        *("good:", "applied", "bad:", "applied"),
        *("promo:", "applied", "pinned:", "applied"),
    ]
    with mmserve_server(env) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Server(url, env, registry, Endpoints(store), client)


@contextmanager
def traffic(server: Server, endpoint: str) -> Iterator[list[tuple[int, str, str]]]:
    """Requests to ``endpoint`` in a loop, until the block ends: (status, variant, model)."""
    seen: list[tuple[int, str, str]] = []
    stop = threading.Event()
    body = {"instances": fixtures.numeric_data(1)[0].tolist()}

    def loop() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"/v1/endpoints/{endpoint}:predict", json=body)
                seen.append(
                    (
                        r.status_code,
                        r.headers.get("x-mmserve-variant", ""),
                        r.headers.get("x-mmserve-model", ""),
                    )
                )
                time.sleep(0.005)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(30)


def settled(server: Server, endpoint: str, check: Callable[[tuple[int, str, str]], bool]) -> None:
    """Once the server follows the state's generation, every answer passes ``check``."""
    generation = server.endpoints.state(endpoint).generation
    deadline = time.monotonic() + 20
    while (
        server.client.get(f"/v1/endpoints/{endpoint}", headers=ADMIN).json()["generation"]
        != generation
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    deadline = time.monotonic() + 20
    while True:  # an alias move also waits for the server's alias cache
        answers = []
        for _ in range(10):
            r = server.client.post(
                f"/v1/endpoints/{endpoint}:predict",
                json={"instances": fixtures.numeric_data(1)[0].tolist()},
            )
            answers.append(
                (
                    r.status_code,
                    r.headers.get("x-mmserve-variant", ""),
                    r.headers.get("x-mmserve-model", ""),
                )
            )
        if all(check(a) for a in answers):
            return
        assert time.monotonic() < deadline, answers
        time.sleep(0.1)


def test_a_canary_to_a_failing_variant_rolls_back_on_its_own(server: Server) -> None:
    with traffic(server, "bad") as seen:
        result = server.run(
            "endpoints", "shift", "bad", "--to", "red", "--strategy", "canary:50%,wait=60s",
            "--min-requests", "5", "--server", server.url, *FAST,
        )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error: rolled back variant to red: error rate 1 over" in result.stderr
    assert "is above --max-error-rate 0.01" in result.stderr
    state = server.endpoints.state("bad")
    assert state.weights == {"blue": 100.0, "red": 0.0} and state.rollout is None
    assert state.last is not None
    assert (state.last.outcome, state.last.guardrail, state.last.measured) == (
        "rolled_back",
        "error_rate",
        1.0,
    )
    assert {status for status, variant, _ in seen if variant == "red"} == {500}
    settled(server, "bad", lambda answer: answer[:2] == (200, "blue"))
    metrics = server.client.get("/metrics").text
    assert (
        'mmserve_endpoint_last_decision_timestamp_seconds{endpoint="bad",guardrail="error_rate",'
        in metrics
    )
    shown = server.run("endpoints", "show", "bad", "--json")
    assert (
        '"outcome": "rolled_back"' in shown.stdout and '"guardrail": "error_rate"' in shown.stdout
    )


def test_a_healthy_linear_shift_completes_and_can_be_rolled_back_by_hand(server: Server) -> None:
    with traffic(server, "good") as seen:
        result = server.run(
            "endpoints", "shift", "good", "--to", "green", "--strategy", "linear:50%,every=1s",
            "--min-requests", "1", "--server", server.url, *FAST,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed: variant to green" in result.stdout
    assert "step 1/2: green at 50%" in result.stderr and "step 2/2: green at 100%" in result.stderr
    assert {status for status, _, _ in seen} == {200}
    assert server.endpoints.state("good").weights == {"blue": 0.0, "green": 100.0}
    settled(server, "good", lambda answer: answer == (200, "green", "lr:2"))
    undone = server.run("endpoints", "rollback", "good")
    assert undone.returncode == 0, undone.stderr
    assert server.endpoints.state("good").weights == {"blue": 100.0, "green": 0.0}
    shown = server.run("endpoints", "show", "good")
    assert "last decision: rolled_back variant to green" in shown.stdout


@contextmanager
def bad_requests(server: Server, endpoint: str, variant: str) -> Iterator[list[int]]:
    """A caller pinning ``variant`` of ``endpoint`` with bodies that fail, until the block
    ends: the statuses it got."""
    seen: list[int] = []
    stop = threading.Event()
    bodies = [
        {"instances": [[1.0]]},  # too few values
        {"instances": [["a", "b", "c", "d", "e"]]},  # strings
        {"instances": [[None] * 5]},  # nulls
        {"instances": [[1e308] * 5]},  # beyond the float32 a forest computes in
    ]

    def loop() -> None:
        headers = {"x-target-variant": variant}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                for body in bodies:
                    r = client.post(f"/v1/endpoints/{endpoint}:predict", json=body, headers=headers)
                    seen.append(r.status_code)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(30)


def test_a_caller_pinning_the_new_variant_with_bad_input_cannot_roll_it_back(
    server: Server,
) -> None:
    with traffic(server, "pinned") as seen, bad_requests(server, "pinned", "green") as bad:
        result = server.run(
            "endpoints", "shift", "pinned", "--to", "green", "--strategy", "linear:50%,every=1s",
            "--min-requests", "1", "--server", server.url, *FAST,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed: variant to green" in result.stdout
    assert set(bad) == {422} and len(bad) > len(seen)  # more bad requests than good ones
    assert {status for status, _, _ in seen} == {200}
    assert server.endpoints.state("pinned").weights == {"blue": 0.0, "green": 100.0}


def test_a_promotion_moves_the_alias_at_the_end_and_not_on_a_rollback(server: Server) -> None:
    with traffic(server, "promo"):
        result = server.run(
            "models", "alias", "lr", "champion", "2", "--rollout", "canary:50%,wait=1s",
            "--min-requests", "1", "--server", server.url, *FAST,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lr@champion → lr:2" in result.stdout
    assert server.registry.aliases("lr")["champion"] == 2
    assert server.endpoints.state("promo").rollout is None
    settled(server, "promo", lambda answer: answer == (200, "main", "lr:2"))

    with traffic(server, "promo") as seen:
        failed = server.run(
            "models", "alias", "lr", "champion", "3", "--rollout", "canary:50%,wait=60s",
            "--min-requests", "3", "--server", server.url, *FAST,
        )  # fmt: skip
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "rolled back alias to lr@champion -> 3: error rate 1 over" in failed.stderr
    assert server.registry.aliases("lr")["champion"] == 2
    state = server.endpoints.state("promo")
    assert state.rollout is None and state.last is not None and state.last.outcome == "rolled_back"
    assert {status for status, _, model in seen if model == "lr:3"} == {500}
    settled(server, "promo", lambda answer: answer == (200, "main", "lr:2"))


def test_only_approved_versions_are_promoted_and_unserved_aliases_are_refused(
    server: Server,
) -> None:
    refused = server.run("models", "alias", "lr", "production", "4", "--rollout", "all-at-once")
    assert refused.returncode == 1
    assert (
        "lr:4 is pending, not approved: alias 'production' only points at approved"
        in refused.stderr
    )
    server.registry.set_alias("lr", "staging", 1)
    unserved = server.run("models", "alias", "lr", "staging", "2", "--rollout", "all-at-once")
    assert unserved.returncode == 1
    assert "no endpoint has a variant serving lr@staging" in unserved.stderr
    assert server.registry.aliases("lr")["staging"] == 1


def test_apply_refuses_a_bad_file_and_a_missing_model(server: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(FILE.replace("weight: 0}", "weight: zero}", 1))
    result = server.run("endpoints", "apply", str(bad))
    assert result.returncode == 1
    assert (
        f"{bad} line 5: endpoints.good.variants[1].weight: Input should be a valid number"
        in result.stderr
    )
    missing = tmp_path / "missing.yaml"
    missing.write_text("endpoints:\n  other:\n    variants: [{name: a, model: nope:1}]\n")
    result = server.run("endpoints", "apply", str(missing))
    assert result.returncode == 1
    assert (
        "endpoint 'other': model 'nope' is not registered (--no-check applies it anyway)"
        in result.stderr
    )
    assert "other" not in server.endpoints.names()
    listed = server.run("endpoints", "list").stdout
    assert "promo" in listed and "main 100%" in listed


def test_a_batch_run_scores_with_an_endpoints_variant(server: Server, tmp_path: Path) -> None:
    x, _ = fixtures.numeric_data(12, seed=21)
    codecs.write_file(fixtures.numeric_table(x), tmp_path / "rows.parquet")
    result = server.run(
        "endpoints", "batch", "bad", "--input", str(tmp_path / "rows.parquet"),
        "--output", str(tmp_path / "out"), "--variant", "blue",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "12 rows scored by bad/blue (lr:1)" in result.stderr
    scored = pq.read_table(tmp_path / "out")
    assert (
        scored.to_pylist()
        == server.registry.load("lr:1").predict(fixtures.numeric_table(x)).to_pylist()
    )
