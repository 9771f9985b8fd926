"""The demo's Redis: a throwaway ``redis-server`` on a free loopback port, without
persistence, stopped with the demo. A machine without one gets it from apt first, as the
tests' ``ensure_redis`` does."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from models._server import DemoError
from models._server import _free_port as free_port
from models._server import _stop as stop

START_TIMEOUT_S = 20.0


@contextmanager
def redis_server() -> Iterator[str]:
    """A fresh ``redis-server``; yields its URL."""
    binary = _installed()
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(port):
            if process.poll() is not None:
                raise DemoError(f"redis-server exited with code {process.returncode} at start")
            if time.monotonic() > deadline:
                raise DemoError(f"redis-server did not answer within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


def _installed() -> str:
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "redis-server"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except (OSError, subprocess.CalledProcessError) as err:
        raise DemoError(
            "streaming needs redis-server, which is not installed and apt-get could not "
            f"install ({err}): apt-get install redis-server, then run the demo again"
        ) from None
    binary = shutil.which("redis-server")
    if binary is None:
        raise DemoError("apt-get installed redis-server, but it is not on the PATH")
    return binary


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
