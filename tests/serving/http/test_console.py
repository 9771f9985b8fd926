"""The web console at ``/ui`` in a real browser: Playwright driving Debian's headless
Chromium (``python -m tests.services ensure-chromium`` installs it; no browser download)
against a real ``mmserve serve`` with registered models, an applied endpoint with a shadow,
a job, a batch run and a Redis stream with a consumer group. Screenshots of every page go to
the test's tmp dir."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import redis

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import ensure_chromium, mmserve_server, redis_server

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.sync_api")

TOKEN = "console-admin-3b9e"
API_KEY = "console-key-51c0"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
ENDPOINTS = """\
endpoints:
  churn:
    variants:
      - {name: blue, model: lr:1, weight: 80}
      - {name: green, model: lr:2, weight: 20}
    shadow: {model: lr:2}
"""
ROW = [0.5, -1.25, 2.0, 0.0, 3.5]
PAGES = ["models", "endpoints", "jobs", "streams"]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Console:
    url: str
    store: Store
    client: httpx.Client


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("console")
    store = Store.from_url(str(root / "store"))
    registry = Registry(store)
    registry.register(fixtures.logistic(), "lr", alias="champion")
    registry.register(fixtures.forest(), "lr")
    registry.register(fixtures.logistic(), "lr", approval="pending")
    (root / "endpoints.yaml").write_text(ENDPOINTS)
    x, _ = fixtures.numeric_data(40)
    (root / "store" / "in").mkdir()
    pq.write_table(fixtures.numeric_table(x), store.path("in/rows.parquet"))
    with redis_server() as events:
        _streams(events.url)
        env = {
            "MMSERVE_STORE_URL": str(root / "store"),
            "MMSERVE_ADMIN_TOKEN": TOKEN,
            "MMSERVE_API_KEY": API_KEY,
            "MMSERVE_DEPLOYMENT__CAPTURE_FLUSH_S": "0.2",  # the shadow's answers, soon in the store
            "MMSERVE_ENDPOINTS": str(root / "endpoints.yaml"),
            "MMSERVE_REDIS_URL": events.url,
        }
        key = {"x-api-key": API_KEY}
        with (
            mmserve_server(env) as url,
            httpx.Client(base_url=url, headers=key, timeout=30) as client,
        ):
            _traffic(client)
            yield Console(url, store, client)


def _streams(url: str) -> None:
    """A stream with a group that read 2 of its 3 events (none acknowledged), and 1 dead letter."""
    r: Any = redis.Redis.from_url(url)
    for i in range(3):
        r.xadd("events", {"f0": i})
    r.xgroup_create("events", "scorers", id="0")
    r.xreadgroup("scorers", "c1", {"events": ">"}, count=2)
    r.xadd("scores-dlq", {"error": "MissingColumn", "reason": "event has no field 'f1'"})
    r.close()


def _traffic(client: httpx.Client) -> None:
    """Requests to the endpoint (scored by the shadow too), a job, a batch run."""
    for _ in range(12):
        answer = client.post("/v1/endpoints/churn:predict", json={"instances": [ROW]})
        assert answer.status_code == 200, answer.text
    assert client.get("/v1/jobs", headers=ADMIN).status_code == 200  # heard from now on
    job = client.post(
        "/v1/models/lr/async",
        content=",".join(map(str, ROW)).encode(),
        headers={"content-type": "text/csv"},
    )
    assert job.status_code == 202, job.text
    done = client.get(f"/v1/jobs/{job.json()['job_id']}", params={"wait": 20}).json()
    assert done["status"] == "succeeded", done
    run = {"model": "lr:1", "input": "in/rows.parquet", "output": "out/run"}
    started = client.post("/v1/batch-jobs", json=run, headers=ADMIN)
    assert started.status_code == 202, started.text
    for _ in range(200):  # the run is a thread of the server's: its 40 rows take a moment
        status = client.get(started.headers["location"], headers=ADMIN).json()["status"]
        if status != "running":
            break
        time.sleep(0.05)
    assert status == "succeeded"
    for _ in range(200):  # every request answered by both sides, in the capture
        if client.get("/v1/endpoints/churn/compare", headers=ADMIN).json()["pairs"] == 12:
            break
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's Chromium with a fresh profile, driven by Playwright."""
    executable = ensure_chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser: Any, console: Console) -> Iterator[Any]:
    """A new tab (its own session storage: no token) that records console errors."""
    tab = browser.new_page()
    tab.errors = []
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.set_default_timeout(10_000)
    yield tab
    tab.close()


def _open(page: Any, console: Console, name: str, token: str | None = None) -> None:
    """Open the console at page ``name`` and, given one, enter ``token``."""
    page.goto(f"{console.url}/ui/#/{name}")
    if token is not None:
        page.fill("#token", token)
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#session.admin" if token == TOKEN else "#session.api-key")


def test_every_page_loads_without_console_errors(
    page: Any, console: Console, tmp_path: Path
) -> None:
    _open(page, console, "models", TOKEN)
    shown = {
        "models": "section[data-model=lr]",
        "endpoints": "section[data-endpoint=churn] [data-plots=blue]",
        "jobs": "#batch td >> text=succeeded",
        "streams": "#groups td >> text=scorers",
    }
    for name in PAGES:
        page.click(f"nav a[data-page={name}]")
        page.wait_for_selector(shown[name])
        page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    assert page.errors == []
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{n}.png" for n in PAGES)


def test_the_pages_show_what_the_server_holds(page: Any, console: Console) -> None:
    _open(page, console, "jobs", TOKEN)
    assert page.inner_text("#jobs tbody").count("succeeded") == 1
    assert console.client.get("/v1/jobs", headers=ADMIN).json()["counts"] == {"succeeded": 1}
    batch = page.inner_text("#batch tbody")
    assert "lr:1" in batch and "1 of 1" in batch and "40" in batch
    page.click("nav a[data-page=streams]")
    page.wait_for_selector("#groups td >> text=scorers")
    cells = page.locator("#groups tbody tr td").all_inner_texts()
    assert cells[:6] == ["events", "3", "scorers", "1", "2", "1"]  # length, group, consumers...
    dead = page.locator("#dead-letters tbody tr td").all_inner_texts()
    assert dead[:2] == ["scores-dlq", "1"]
    assert dead[3:] == ["MissingColumn", "event has no field 'f1'"]
    page.click("nav a[data-page=endpoints]")
    page.click("text=Compare primary and shadow")
    agreement = page.wait_for_selector("[data-agreement]").get_attribute("data-agreement")
    report = console.client.get("/v1/endpoints/churn/compare", headers=ADMIN).json()
    assert report["pairs"] == 12
    assert agreement == f"{report['agreement'] * 100:.2f}%"
    assert page.errors == []


def test_the_models_page_shows_a_registered_model_read_only_without_the_token(
    page: Any, console: Console
) -> None:
    _open(page, console, "models")  # no token: this server wants its API key first
    notice = page.wait_for_selector("#notice:not([hidden])").inner_text()
    assert notice == "This server needs its API key (or the admin token): enter it above."
    assert page.locator("section").count() == 0
    _open(page, console, "models", API_KEY)
    card = page.wait_for_selector("section[data-model=lr]")
    rows = page.locator("section[data-model=lr] tbody tr")
    assert rows.count() == 3
    assert rows.nth(0).locator("td").nth(2).inner_text() == "pending"  # newest first
    assert "@champion" in rows.nth(2).inner_text()
    assert "Read-only: actions need the admin token." in card.inner_text()
    assert page.locator("button", has_text="Move alias").count() == 0
    assert page.locator("button", has_text="Approve").count() == 0
    # ... and the route behind the action refuses the API key
    status = page.evaluate(
        """key => fetch('/v1/models/lr/aliases/staging', {method: 'PUT',
             headers: {'content-type': 'application/json', 'x-api-key': key},
             body: '{"version": 2}'}).then(r => r.status)""",
        API_KEY,
    )
    assert status == 401
    assert Registry(console.store).aliases("lr") == {"champion": 1}
    page.click("nav a[data-page=jobs]")  # drawn once the session is read: wait for it
    refusal = page.wait_for_selector("main p.empty").inner_text()
    assert refusal == "Listing jobs and batch runs needs the admin token: enter it above."


def test_the_endpoints_page_shows_a_live_endpoints_weights(page: Any, console: Console) -> None:
    _open(page, console, "endpoints", API_KEY)
    blue = page.wait_for_selector("[data-endpoint=churn] .weights [data-variant=blue]")
    green = page.wait_for_selector("[data-endpoint=churn] .weights [data-variant=green]")
    assert (blue.inner_text(), green.inner_text()) == ("blue 80%", "green 20%")
    assert blue.get_attribute("style").startswith("width:80%")
    assert green.get_attribute("style").startswith("width:20%")
    assert page.errors == []
    # The key reads weights and figures; the endpoint's config is the admin's.
    keyed = console.client.get("/v1/console/endpoints", headers={"x-api-key": API_KEY}).json()
    admin = console.client.get("/v1/console/endpoints", headers=ADMIN).json()
    assert [sorted(e) for e in keyed["endpoints"]] == [
        sorted(set(e) - {"config"}) for e in admin["endpoints"]
    ]
    assert [e["state"] for e in keyed["endpoints"]] == [
        {"history": e["state"]["history"]} for e in admin["endpoints"]
    ]
    assert "config" in admin["endpoints"][0]


def test_an_alias_moved_in_the_console_moves_it_in_the_registry(
    page: Any, console: Console
) -> None:
    _open(page, console, "models", TOKEN)
    card = page.locator("section[data-model=lr]")
    card.locator("input[name=alias]").fill("staging")
    card.locator("select[name=version]").select_option("2")
    card.locator("button", has_text="Move alias").click()
    page.wait_for_selector("section[data-model=lr] h2 >> text=@staging → v2")
    assert Registry(console.store).aliases("lr") == {"champion": 1, "staging": 2}
    # an unapproved version on the protected alias is refused, and said so
    card.locator("input[name=alias]").fill("production")
    card.locator("select[name=version]").select_option("3")
    card.locator("button", has_text="Move alias").click()
    notice = page.wait_for_selector("#notice:not([hidden])").inner_text()
    assert notice.startswith("lr:3 is pending, not approved")
    # approving it through the console lets it move
    card.locator("tbody tr").nth(0).locator("button", has_text="Approve").click()
    page.wait_for_selector("section[data-model=lr] tbody tr >> nth=0 >> text=approved")
    card.locator("input[name=alias]").fill("production")
    card.locator("select[name=version]").select_option("3")
    card.locator("button", has_text="Move alias").click()
    page.wait_for_selector("section[data-model=lr] h2 >> text=@production → v3")
    registry = Registry(console.store)
    assert registry.aliases("lr") == {"champion": 1, "production": 3, "staging": 2}
    assert registry.get("lr:3").approval == "approved"
    assert [e for e in page.errors if "409" not in e] == []  # the refusal's own log line


def test_a_page_the_console_does_not_have_shows_the_models(page: Any, console: Console) -> None:
    _open(page, console, "constructor", API_KEY)  # a name every object has: not a page
    page.wait_for_selector("section[data-model=lr]")
    assert page.errors == []
