"""A TCP proxy in front of a real service, which a test can cut or hang: the store outages
of item 13 over real sockets, without touching the service behind it.

``up``: bytes go both ways. ``down``: nothing listens (connections are refused). ``hang``:
connections are accepted and read, and never answered. Changing the mode cuts the
connections open at that moment, so a client's pooled connection sees the change too.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Literal

Mode = Literal["up", "down", "hang"]


class Proxy:
    """``127.0.0.1:<port>`` forwarding to ``target`` (``host``, ``port``) while ``up``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode: Mode = "up"
        self._listener = _listen(0)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._start_accepting()

    def set(self, mode: Mode) -> None:
        """Switch to ``mode``; the connections open now are cut."""
        with self._lock:
            self.mode = mode
            for conn in self._open:
                _close(conn)
            self._open.clear()
            if mode == "down" and self._listener is not None:
                _close(self._listener)
                self._listener = None
            elif mode != "down" and self._listener is None:
                self._listener = _listen(self.port)
                self._start_accepting()

    def close(self) -> None:
        self.set("down")

    def _start_accepting(self) -> None:
        listener = self._listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket | None) -> None:
        while listener is not None:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the proxy went down
                return
            with self._lock:
                self._open.add(conn)
                mode = self.mode
            if mode == "up":
                threading.Thread(target=self._forward, args=(conn,), daemon=True).start()
            else:  # hang: read what comes, answer nothing
                threading.Thread(target=_drain, args=(conn, None), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _close(conn)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.add(upstream)
        threading.Thread(target=_drain, args=(upstream, conn), daemon=True).start()
        _drain(conn, upstream)


def _listen(port: int) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    return listener


def _drain(source: socket.socket, sink: socket.socket | None) -> None:
    """Copy ``source`` to ``sink`` (or nowhere) until either closes, then close both."""
    try:
        while data := source.recv(65536):
            if sink is not None:
                sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        if sink is not None:
            _close(sink)


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()


@contextlib.contextmanager
def proxy(endpoint: str) -> Iterator[Proxy]:
    """A :class:`Proxy` in front of ``http://host:port``."""
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    p = Proxy((host, int(port)))
    try:
        yield p
    finally:
        p.close()
