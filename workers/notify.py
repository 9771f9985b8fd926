"""Delivering a job's notification to its callback URL, safely for the network it runs in.

A callback URL is the caller's, and the request goes out from inside the deployment, so:

- only public addresses are reached, unless the operator allows more
  (``MMSERVE_JOBS__CALLBACK_ALLOWED``: hosts and networks): loopback, private, link-local,
  shared (CGNAT), multicast, unspecified and reserved addresses are refused, and with them
  the cloud metadata services (169.254.169.254, fd00:ec2::254);
- the check is made on the addresses the name resolves to, and the connection goes to the
  address that was checked: a name cannot resolve to a public address for the check and
  to a private one for the connection;
- redirects are never followed (a 3xx is a failed delivery), and no proxy is used;
- an attempt has a total deadline (connecting, sending, the answer), whatever the other
  side does, and runs off the job's worker slot (its own Celery task, or its own thread).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "MMSERVE_JOBS__CALLBACK_ALLOWED"
_RETRIED = {408, 425, 429}  # besides 5xx: answers that say "later"


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be a callback (``None`` if it can): an http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port that is not one
    except ValueError as err:
        return str(err)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "must not hold spaces or control characters"
    return None


@dataclass(frozen=True)
class Policy:
    """Which addresses a callback may reach: public ones, and those the operator allows."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def of(cls, allowed: list[str]) -> Policy:
        """From the setting's entries: host names, addresses and networks (CIDR)."""
        hosts, networks = set(), []
        for entry in allowed:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def refusal(self, host: str, address: Address) -> str | None:
        """Why ``address`` (which ``host`` resolved to) may not be reached, or ``None``."""
        inside = _embedded(address)
        if host.lower().rstrip(".") in self.hosts or any(
            a in n for a in (address, inside) if a for n in self.networks
        ):
            return None
        kind = _kind(inside) if inside else _kind(address)
        if kind is None:
            return None
        return f"{host} is {address}, a {kind} address; allowed only through {SETTING}"


def _embedded(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which it reaches."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _kind(address: Address) -> str | None:
    """What makes ``address`` non-public, or ``None`` if it is public."""
    for kind, test in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if test:
            return kind
    return None if address.is_global else "non-public"


@dataclass(frozen=True)
class Outcome:
    status: Literal["delivered", "failed", "refused"]
    detail: str
    retry: bool = False
    """Worth another attempt (no answer, 5xx, 408, 429), after a backoff."""


def deliver(
    url: str, body: bytes, headers: dict[str, str], policy: Policy, timeout_s: float
) -> Outcome:
    """POST ``body`` to ``url`` once, within ``timeout_s`` in all."""
    attempt = _Attempt(url, body, headers, policy, timeout_s)
    worker = threading.Thread(target=attempt.run, name="mmserve-notify", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        attempt.abort()  # the thread ends at once, its socket shut
        return Outcome("failed", f"no answer within {timeout_s:g} s", retry=True)
    return attempt.outcome


class _Attempt:
    def __init__(
        self, url: str, body: bytes, headers: dict[str, str], policy: Policy, timeout_s: float
    ):
        self.url, self.body, self.headers = url, body, headers
        self.policy, self.timeout_s = policy, timeout_s
        self.outcome = Outcome("failed", "not attempted", retry=True)
        self._connection: _Pinned | None = None

    def run(self) -> None:
        try:
            self.outcome = self._post()
        except TimeoutError:  # the socket's own deadline, met as the caller's: one answer
            self.outcome = Outcome("failed", f"no answer within {self.timeout_s:g} s", retry=True)
        except (OSError, http.client.HTTPException, ValueError) as err:
            self.outcome = Outcome("failed", f"{type(err).__name__}: {err}", retry=True)

    def abort(self) -> None:
        connection = self._connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    def _post(self) -> Outcome:
        parts = urlsplit(self.url)
        host, https = parts.hostname or "", parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        addresses = _resolve(host, port)
        for address in addresses:
            if reason := self.policy.refusal(host, address):
                return Outcome("refused", reason)
        connection = _Pinned(host, port, addresses, self.timeout_s, https)
        self._connection = connection
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        headers = {"Content-Type": "application/json", **self.headers}
        try:
            connection.request("POST", path, body=self.body, headers=headers)
            answer = connection.getresponse()
            answer.read(64 * 1024)  # a little of it, so the connection closes cleanly
        finally:
            connection.close()
        return _judged(answer.status, answer.reason, answer.getheader("Location"))


def _judged(status: int, reason: str, location: str | None) -> Outcome:
    said = f"the callback answered {status} {reason}".rstrip()
    if 200 <= status < 300:
        return Outcome("delivered", said)
    if 300 <= status < 400:
        return Outcome("failed", f"{said} (to {location}); redirects are not followed")
    return Outcome("failed", said, retry=status >= 500 or status in _RETRIED)


def _resolve(host: str, port: int) -> list[Address]:
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[Address] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    return addresses


class _Pinned(http.client.HTTPConnection):
    """A connection to ``host`` (its name in the Host header and, for https, the certificate
    checked against it) that connects only to the ``addresses`` that were checked."""

    def __init__(
        self, host: str, port: int, addresses: list[Address], timeout_s: float, https: bool
    ):
        super().__init__(host, port, timeout=timeout_s)
        self.addresses, self.https = addresses, https
        if https:
            self.default_port = 443  # type: ignore[misc]  # no ":443" in the Host header

    def connect(self) -> None:
        error: OSError = OSError(f"cannot connect to {self.host}")
        for address in self.addresses:
            try:
                self.sock = socket.create_connection((str(address), self.port), self.timeout)
                break
            except OSError as err:
                error = err
        else:
            raise error
        if self.https:
            context = ssl.create_default_context()
            self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
