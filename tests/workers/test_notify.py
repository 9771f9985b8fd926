"""Which addresses a callback may reach, and one delivery attempt against real local HTTP
servers (the end-to-end behaviour, with a worker, is in ``test_callbacks``)."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workers.notify import Policy, check_url, deliver

SETTING = "allowed only through MMSERVE_JOBS__CALLBACK_ALLOWED"


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fd00:ec2::254", "private"),  # the same, over IPv6 (AWS)
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.0.1", "private"),
        ("100.100.100.200", "non-public"),  # shared address space (a metadata service too)
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str, kind: str) -> None:
    ip = ipaddress.ip_address(address)
    assert (
        Policy().refusal("hook.example", ip) == f"hook.example is {ip}, a {kind} address; {SETTING}"
    )


def test_public_addresses_pass_and_the_operator_allows_more() -> None:
    assert Policy().refusal("hook.example", ipaddress.ip_address("93.184.215.14")) is None
    assert Policy().refusal("hook.example", ipaddress.ip_address("2606:4700::1111")) is None
    allowed = Policy.of(["10.0.0.0/8", "127.0.0.1", "Hooks.Internal."])
    assert allowed.refusal("a", ipaddress.ip_address("10.9.9.9")) is None
    assert allowed.refusal("a", ipaddress.ip_address("127.0.0.1")) is None
    assert allowed.refusal("a", ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert allowed.refusal("hooks.internal", ipaddress.ip_address("192.168.1.1")) is None
    assert allowed.refusal("a", ipaddress.ip_address("127.0.0.2")) is not None
    assert allowed.refusal("a", ipaddress.ip_address("169.254.169.254")) is not None


def test_only_http_urls_with_a_host_are_callbacks() -> None:
    assert check_url("https://hooks.example/done?x=1") is None
    assert check_url("http://[::1]:8080/") is None
    assert check_url("file:///etc/passwd") == "must be an http:// or https:// URL"
    assert check_url("http:///path") == "must be an http:// or https:// URL"
    assert check_url("gopher://hooks.example/") == "must be an http:// or https:// URL"
    assert check_url("http://hooks.example/a b") == "must not hold spaces or control characters"
    assert check_url("http://hooks.example:0x50/") is not None


class _Hook(BaseHTTPRequestHandler):
    status = 204
    location = ""
    hang: threading.Event | None = None
    seen: list[str]

    def do_POST(self) -> None:
        self.seen.append(self.rfile.read(int(self.headers["content-length"])).decode())
        if self.hang is not None:
            self.hang.wait()
        self.send_response(self.status)
        if self.location:
            self.send_header("Location", self.location)
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def hook(host: str = "127.0.0.1", **behaviour: object) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Hook", (_Hook,), {"seen": seen, **behaviour})
    server = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_port}/done", seen
    finally:
        if isinstance(behaviour.get("hang"), threading.Event):
            behaviour["hang"].set()  # type: ignore[union-attr]
        server.shutdown()
        server.server_close()


LOCAL = Policy.of(["127.0.0.1"])


def test_a_delivery_posts_the_body_to_the_allowed_address() -> None:
    with hook() as (url, seen):
        outcome = deliver(url, b'{"a": 1}', {}, LOCAL, 10)
    assert (outcome.status, outcome.detail) == ("delivered", "the callback answered 204 No Content")
    assert seen == ['{"a": 1}']


def test_a_redirect_fails_and_its_target_gets_nothing() -> None:
    with hook() as (target, got), hook(status=307, location=target) as (url, seen):
        outcome = deliver(url, b"{}", {}, LOCAL, 10)
    assert outcome.status == "failed" and not outcome.retry
    assert outcome.detail == (
        f"the callback answered 307 Temporary Redirect (to {target}); redirects are not followed"
    )
    assert (seen, got) == (["{}"], [])


def test_a_refused_address_is_never_connected_to() -> None:
    with hook("127.0.0.2") as (url, seen):
        outcome = deliver(url, b"{}", {}, LOCAL, 10)
    assert outcome.status == "refused" and not outcome.retry
    assert outcome.detail == f"127.0.0.2 is 127.0.0.2, a loopback address; {SETTING}"
    assert seen == []


def test_a_hanging_callback_is_cut_off_at_the_deadline() -> None:
    with hook(hang=threading.Event()) as (url, _):
        outcome = deliver(url, b"{}", {}, LOCAL, 0.5)  # the hook answers when it stops
    assert (outcome.status, outcome.retry) == ("failed", True)
    assert outcome.detail == "no answer within 0.5 s"


def test_server_errors_are_retried_client_errors_are_not() -> None:
    with hook(status=503) as (url, _):
        assert deliver(url, b"{}", {}, LOCAL, 10).retry
    with hook(status=404) as (url, _):
        outcome = deliver(url, b"{}", {}, LOCAL, 10)
    assert (outcome.status, outcome.retry) == ("failed", False)
    assert outcome.detail == "the callback answered 404 Not Found"
