"""Callbacks are not a request forgery tool: real ``mmserve serve`` and ``mmserve worker``
processes, and real HTTP servers as the callbacks. The stack allows 127.0.0.1 (the hooks
here) through MMSERVE_JOBS__CALLBACK_ALLOWED; any other loopback address is refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import free_port, mmserve_process, mmserve_worker
from tests.workers.stack import Stack, submit, wait

pytestmark = pytest.mark.slow


class Hook:
    """A callback endpoint: records what it receives and answers as told (204, a redirect,
    or nothing until ``release`` is set)."""

    def __init__(self, host: str, answer: str = "ok", location: str = "") -> None:
        self.received: list[tuple[str, str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._take("POST")

            def do_GET(self) -> None:
                self._take("GET")

            def _take(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                hook.received.append((method, self.rfile.read(length).decode()))
                hook.entered.set()
                if answer == "hang":
                    hook.release.wait()
                self.send_response(302 if answer == "redirect" else 204)
                if answer == "redirect":
                    self.send_header("Location", location)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, free_port()), Handler)
        self.url = f"http://{host}:{self.server.server_port}/done"

    @contextmanager
    def running(self) -> Iterator[Hook]:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        try:
            yield self
        finally:
            self.release.set()
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[None]:
    """One job at a time: a notification that hangs must not keep the next job waiting.
    Many attempts: delivered in the job's slot, they would hold it far past any wait here."""
    env = {**stack.env, "MMSERVE_JOBS__CALLBACK_ATTEMPTS": "30"}
    with mmserve_worker(env, str(stack.logs / "worker.log"), "--concurrency", "1"):
        yield


def notified(stack: Stack, token: str, seconds: float = 90) -> dict[str, Any]:
    """The job's notification outcome, as its record in the store has it, once there."""
    deadline = time.monotonic() + seconds
    while True:
        record = json.loads(stack.store.read(f"jobs/{token}/job.json"))
        if record.get("notification") is not None:
            return dict(record["notification"])
        assert time.monotonic() < deadline, f"no notification recorded: {record}"
        time.sleep(0.2)


def test_an_allowed_callback_is_delivered_and_recorded(stack: Stack, worker: None) -> None:
    with Hook("127.0.0.1").running() as hook:
        token = submit(stack, "lr", **{"x-callback-url": hook.url})
        assert wait(stack, [token])[token]["status"] == "succeeded"
        outcome = notified(stack, token)
    assert outcome == {
        "status": "delivered",
        "attempts": 1,
        "detail": "the callback answered 204 No Content",
    }
    assert [method for method, _ in hook.received] == ["POST"]
    assert json.loads(hook.received[0][1])["jobId"] == token
    view = stack.client.get(f"/v1/jobs/{token}").json()
    assert view["notification"] == {"status": "delivered", "attempts": 1}


def test_a_redirect_is_a_failed_delivery_never_followed(stack: Stack, worker: None) -> None:
    with (
        Hook("127.0.0.1").running() as target,
        Hook("127.0.0.1", "redirect", target.url).running() as redirecting,
    ):
        token = submit(stack, "lr", **{"x-callback-url": redirecting.url})
        assert wait(stack, [token])[token]["status"] == "succeeded"
        outcome = notified(stack, token)
    assert target.received == []
    assert [method for method, _ in redirecting.received] == ["POST"]  # not tried again
    assert outcome == {
        "status": "failed",
        "attempts": 1,
        "detail": f"the callback answered 302 Found (to {target.url}); redirects are not followed",
    }


def test_a_callback_to_a_loopback_address_not_allowed_is_refused(
    stack: Stack, worker: None
) -> None:
    with Hook("127.0.0.2").running() as hook:
        token = submit(stack, "lr", **{"x-callback-url": hook.url})
        assert wait(stack, [token])[token]["status"] == "succeeded"
        outcome = notified(stack, token)
        assert stack.client.get(f"/v1/jobs/{token}/result").status_code == 200
    assert hook.received == []
    assert outcome == {
        "status": "refused",
        "attempts": 1,
        "detail": "127.0.0.2 is 127.0.0.2, a loopback address; allowed only through "
        "MMSERVE_JOBS__CALLBACK_ALLOWED",
    }
    # The caller sees that it was refused, not where the name led.
    view = stack.client.get(f"/v1/jobs/{token}").json()
    assert view["notification"] == {"status": "refused", "attempts": 1}


def test_a_hanging_callback_holds_no_job_slot(stack: Stack, worker: None) -> None:
    with Hook("127.0.0.1", "hang").running() as hook:
        hanging = submit(stack, "lr", **{"x-callback-url": hook.url})
        assert hook.entered.wait(90), "the callback was never called"
        after = submit(stack, "lr")  # the worker runs one job at a time
        records = wait(stack, [hanging, after])
        assert records[hanging]["status"] == "succeeded"
        assert records[after]["status"] == "succeeded"
        result = stack.client.get(f"/v1/jobs/{hanging}/result")
        assert result.status_code == 200
        assert not hook.release.is_set()  # still hanging: released as the hook stops


def test_a_callback_url_is_checked_at_submit(stack: Stack) -> None:
    for url, rule in {
        "ftp://hooks.example/done": "must be an http:// or https:// URL",
        "http:///done": "must be an http:// or https:// URL",
        "http://hooks.example:99999/done": "Port out of range 0-65535",
    }.items():
        response = stack.client.post(
            "/v1/models/lr/async",
            content="1,2,3,4,5",
            headers={"content-type": "text/csv", "x-callback-url": url},
        )
        assert response.status_code == 400
        assert response.json() == {
            "error": f"invalid callback URL (X-Callback-Url) {url!r}: {rule}"
        }
    named = stack.client.post(
        "/v1/models/lr/async",
        json={"input_location": "inputs/none.csv", "callback_url": "file:///etc/passwd"},
    )
    assert named.status_code == 400
    assert named.json() == {
        "error": "invalid callback URL (callback_url) 'file:///etc/passwd': "
        "must be an http:// or https:// URL"
    }


def test_in_embedded_mode_hanging_callbacks_hold_no_job_thread(tmp_path: Path) -> None:
    """Without a broker the server runs jobs in two threads of its own: two callbacks that
    hang must leave both free for the next job."""
    Registry(Store.from_url(str(tmp_path))).register(fixtures.logistic(), "lr")
    env = {
        "MMSERVE_STORE_URL": str(tmp_path),
        "MMSERVE_BROKER_URL": "",
        "MMSERVE_JOBS__CALLBACK_ALLOWED": '["127.0.0.1"]',
        "MMSERVE_JOBS__CALLBACK_ATTEMPTS": "30",
    }
    with (
        Hook("127.0.0.1", "hang").running() as hook,
        mmserve_process(env) as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        embedded = Stack(url, client, Store.from_url(str(tmp_path)), "", env, None, 0, tmp_path)  # type: ignore[arg-type]
        hanging = [submit(embedded, "lr", **{"x-callback-url": hook.url}) for _ in range(2)]
        deadline = time.monotonic() + 60
        while len(hook.received) < 2:
            assert time.monotonic() < deadline, "the callbacks were never called"
            time.sleep(0.1)
        after = submit(embedded, "lr")
        records = wait(embedded, [*hanging, after])
        assert {r["status"] for r in records.values()} == {"succeeded"}
        assert client.get(f"/v1/jobs/{after}/result").status_code == 200
        assert not hook.release.is_set()  # both still hanging
