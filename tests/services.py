"""Real services for the tests: a Redis that answers, and moto's S3 server over HTTP.

``python -m tests.services ensure-redis``, ``ensure-promtool`` and ``ensure-chromium`` are what
``make test`` runs first.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlparse
from urllib.request import urlopen

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait(check, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {seconds:.0f} s")
        time.sleep(0.05)


def ensure_redis(url: str | None = None) -> str:
    """Make ``url`` (default ``MMSERVE_TEST_REDIS_URL``) answer, starting redis-server if needed."""
    url = url or os.environ.get("MMSERVE_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if _answers(host, port):
        return url
    if host not in ("127.0.0.1", "localhost"):
        raise RuntimeError(f"Redis at {url} does not answer, and it is not local to start")
    if shutil.which("redis-server") is None:
        apt_install("redis-server")
    subprocess.run(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            host,
            "--daemonize",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    _wait(lambda: _answers(host, port), f"redis-server on port {port}")
    return url


def ensure_promtool() -> str | None:
    """The path of ``promtool`` (Prometheus's rule checker), installing Debian's
    ``prometheus`` package if it is missing; ``None`` (and why, on stderr) where apt cannot."""
    if shutil.which("promtool") is None and shutil.which("apt-get") is not None:
        try:
            apt_install("prometheus")
        except (subprocess.CalledProcessError, OSError) as err:
            print(f"cannot install promtool (Debian's prometheus package): {err}", file=sys.stderr)
    return shutil.which("promtool")


def ensure_chromium() -> str:
    """The path of Debian's ``chromium`` (the console's browser tests drive it through
    Playwright, which downloads no browser of its own), installing it if it is missing."""
    if shutil.which("chromium") is None:
        apt_install("chromium")
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("chromium is not installed, and apt-get did not install it")
    return path


def apt_install(package: str) -> None:
    """``apt-get install`` a package, reading the package lists first if they are missing
    or stale (a fresh machine has none)."""
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(install).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(install, check=True)


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """moto's S3-compatible server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            with urlopen(f"{endpoint}/moto-api/", timeout=1):
                return True
        except OSError:
            return proc.poll() is not None  # stop waiting if it died

    try:
        _wait(up, "moto S3 server")
        if proc.poll() is not None:
            raise RuntimeError("moto S3 server exited at start")
        yield endpoint
    finally:
        stop(proc)


@contextmanager
def mmserve_server(env: dict[str, str], *args: str) -> Iterator[str]:
    """A real ``mmserve serve`` process on a free port; yields its base URL."""
    with mmserve_process(env, *args) as (base, _):
        yield base


@contextmanager
def mmserve_process(
    env: dict[str, str], *args: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``mmserve serve`` process on a free port; yields its base URL and process."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mmserve = os.path.join(os.path.dirname(sys.executable), "mmserve")
    proc = subprocess.Popen(
        [mmserve, "serve", "--port", str(port), "--log-level", "warning", *args],
        env={**os.environ, **env},
    )

    def up() -> bool:
        try:
            with urlopen(f"{base}/v2/health/live", timeout=1):
                return True
        except OSError:
            return proc.poll() is not None

    try:
        _wait(up, "mmserve serve", seconds=60)
        if proc.poll() is not None:
            raise RuntimeError(f"mmserve serve exited with {proc.returncode}")
        yield base, proc
    finally:
        stop(proc)


class RedisServer:
    """A throwaway redis-server (no persistence) on a free port, which a test may restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no"]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        _wait(lambda: _answers("127.0.0.1", self.port), f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None

    def restart(self) -> None:
        """Everything in it is lost, as with a crash of a Redis without persistence."""
        self.stop()
        self.start()

    def shutdown(self) -> None:
        """Stop it the way an operator does (``SHUTDOWN NOSAVE``): clients see it close
        their connections, and everything in it is lost."""
        if self._proc is not None:
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 5) as s:
                s.sendall(b"SHUTDOWN NOSAVE\r\n")
                s.recv(16)  # the connection closes when it is down
            self._proc.wait(10)
            self._proc = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    ensure_redis()  # installs redis-server if this machine has none
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def mmserve_worker(env: dict[str, str], log: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``mmserve worker`` process (its own process group, so a test can kill it
    whole), ready to take jobs; its output goes to the file ``log``."""
    mmserve = os.path.join(os.path.dirname(sys.executable), "mmserve")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [mmserve, "worker", "--loglevel", "info", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        with open(log, "rb") as f:
            return b" ready." in f.read() or proc.poll() is not None

    try:
        _wait(ready, "mmserve worker", seconds=60)
        if proc.poll() is not None:
            raise RuntimeError(f"mmserve worker exited with {proc.returncode}")
        yield proc
    finally:
        kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            kill_group(proc, signal.SIGKILL)
            proc.wait(10)


def stop(proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    """Ask the process to end, and end it if it will not."""
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process and every child it forked."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


if __name__ == "__main__":
    if sys.argv[1:] == ["ensure-redis"]:
        print(f"redis answers at {ensure_redis()}")
    elif sys.argv[1:] == ["ensure-chromium"]:
        print(f"chromium: {ensure_chromium()}")
    elif sys.argv[1:] == ["ensure-promtool"]:  # where apt cannot, the rule tests skip
        print(f"promtool: {ensure_promtool() or 'not installed'}")
    else:
        sys.exit("usage: python -m tests.services ensure-redis | ensure-promtool | ensure-chromium")
