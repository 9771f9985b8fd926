"""What makes docker-compose.yml work as written, checked against the CLI, the settings
and the app: the problems of a compose file, each naming its service."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving import cli
from tests.deploy.checks import (
    URL_SETTINGS,
    Refused,
    host_port,
    http_check,
    interpolated,
    parse,
    problems_of_command,
    problems_of_environment,
    routes,
)

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"redis", "minio", "createbucket", "api", "worker", "beat", "streamer"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
Compose = dict[str, Any]


def load() -> Compose:
    compose: Compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose


def problems(compose: Compose, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Everything in ``compose`` that would not work as written."""
    services: dict[str, Any] = compose["services"]
    found = [] if set(services) == SERVICES else [f"services: {sorted(services)}"]
    for name, service in services.items():
        found += _command(name, service)
        found += problems_of_environment(env_of_service(service), name, monkeypatch)
        found += _urls(name, service, services)
        found += _health(name, service, services)
        found += _depends(name, service, services)
        found += _escaped(name, service)
    found += _volumes(compose)
    found += _published(services)
    found += _store(services)
    return found


def argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def mmserve(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("mmserve")


def env_of_service(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _command(name: str, service: dict[str, Any]) -> list[str]:
    return [f"{name}: {p}" for p in problems_of_command(argv(service))] if mmserve(service) else []


def listening(service: dict[str, Any]) -> set[int]:
    """The ports a service's container listens on: its published and exposed ones, and
    the ones its mmserve command opens."""
    ports = {_container_port(p) for p in service.get("ports", [])}
    ports |= {int(p) for p in service.get("expose", [])}
    params = _params(service)
    ports |= {int(params[k]) for k in ("port", "metrics_port") if params.get(k) is not None}
    return ports


def _params(service: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a service's mmserve command; none for another image, or for a
    command that does not parse (reported as the command's problem)."""
    if not mmserve(service):
        return {}
    try:
        return parse(argv(service))[1]
    except Refused:
        return {}


def _container_port(spec: Any) -> int:
    return int(str(spec).split(":")[-1].split("/")[0])


def _parses(service: dict[str, Any]) -> bool:
    """An mmserve service whose command parses (one that does not is reported once, as
    the command's problem, not again through the ports it would have opened)."""
    return mmserve(service) and not problems_of_command(argv(service))


def _opened(service: dict[str, Any]) -> set[int]:
    """Ports the mmserve command itself opens (what a mapping or a check must point at)."""
    return listening({"image": service.get("image"), "command": service.get("command")})


def _urls(name: str, service: dict[str, Any], services: dict[str, Any]) -> list[str]:
    """Each URL a service is given names a service and a port that service listens on."""
    found = []
    env = env_of_service(service)
    for setting in URL_SETTINGS:
        if setting not in env:
            continue
        host, port = host_port(interpolated(env[setting]), 6379)
        if host not in services:
            found.append(f"{name}: {setting} names {host!r}, which is no service")
        elif port not in listening(services[host]):
            found.append(
                f"{name}: {setting} asks {host}:{port}, which listens on "
                f"{sorted(listening(services[host]))}"
            )
    if _parses(service):
        for spec in service.get("ports", []):
            if _container_port(spec) not in _opened(service):
                found.append(f"{name}: port mapping {spec} targets no port the command opens")
    if name == "minio":
        address = argv(service)[argv(service).index("--address") + 1]
        if int(address.rsplit(":", 1)[1]) not in {_container_port(p) for p in service["ports"]}:
            found.append(f"minio: --address {address} is not published")
    return found


def _health(name: str, service: dict[str, Any], services: dict[str, Any]) -> list[str]:
    check = service.get("healthcheck")
    if check is None:
        if _one_shot(name, services):
            return []  # its dependents wait for it to complete instead
        return [f"{name}: no health check"]
    test = " ".join(str(t) for t in check["test"])
    asked = http_check(test)
    if asked is None or not _parses(service):
        return _worker_ping(name, test) if name == "worker" else []
    port, path = asked
    found = []
    if port not in _opened(service):
        found.append(
            f"{name}: the health check asks port {port}, the command opens "
            f"{sorted(_opened(service))}"
        )
    if port == _params(service).get("metrics_port"):
        if path != "/metrics":
            found.append(f"{name}: the health check asks {path}, not the consumer's /metrics")
    elif path not in routes():
        found.append(f"{name}: the health check asks {path}, which is no route of the app")
    return found


def _worker_ping(name: str, test: str) -> list[str]:
    """The worker's check pings it by node name: mmserve@<host>-<pid>, pid 1 in a container."""
    assert '"--hostname=mmserve@%h-{os.getpid()}"' in inspect.getsource(cli.worker)
    if '--destination "mmserve@$${HOSTNAME}-1"' not in test or "inspect ping" not in test:
        return [f"{name}: the health check does not ping this worker by its node name"]
    return []


def _one_shot(name: str, services: dict[str, Any]) -> bool:
    waiting = [
        s["depends_on"][name]["condition"]
        for s in services.values()
        if isinstance(s.get("depends_on"), dict) and name in s["depends_on"]
    ]
    restart = str(services[name].get("restart", "no"))
    return restart == "no" and bool(waiting) and set(waiting) == {"service_completed_successfully"}


def _depends(name: str, service: dict[str, Any], services: dict[str, Any]) -> list[str]:
    found = []
    for other, rule in (service.get("depends_on") or {}).items():
        condition = rule.get("condition", "service_started")
        if other not in services:
            found.append(f"{name}: depends on {other!r}, which is no service")
        elif condition not in CONDITIONS:
            found.append(f"{name}: waits for {other} to be {condition!r}, no such condition")
        elif condition == "service_healthy" and "healthcheck" not in services[other]:
            found.append(f"{name}: waits for {other} to be healthy; it has no health check")
    return found


def _escaped(name: str, service: dict[str, Any]) -> list[str]:
    """A ``$VAR`` meant for the container must be ``$$VAR``: compose itself would replace
    it, from the host's environment (empty), before the container ever runs."""
    texts = [*argv(service), *(str(t) for t in (service.get("healthcheck") or {}).get("test", []))]
    found = []
    for text in texts:
        bare = text.replace("$$", "")
        for match in re.finditer(r"\$(?!\{\w+:-)", bare):
            found.append(f"{name}: unescaped {bare[match.start() :][:20]!r}… (write $$)")
    return found


def _volumes(compose: Compose) -> list[str]:
    declared = set(compose.get("volumes") or {})
    used = {
        str(v).split(":")[0]
        for s in compose["services"].values()
        for v in s.get("volumes", [])
        if not str(v).startswith(("/", ".", "~"))
    }
    return [f"volume {v!r} is used but not declared" for v in sorted(used - declared)] + [
        f"volume {v!r} is declared but not used" for v in sorted(declared - used)
    ]


def _published(services: dict[str, Any]) -> list[str]:
    seen: dict[str, str] = {}
    found = []
    for name, service in services.items():
        for spec in service.get("ports", []):
            parts = str(spec).split(":")
            host = ":".join(parts[:-1])
            if host in seen:
                found.append(f"{name}: host port {host} is published by {seen[host]} too")
            seen.setdefault(host, name)
    return found


def _store(services: dict[str, Any]) -> list[str]:
    """The store's bucket is the one createbucket makes, on the endpoint the others use."""
    made = " ".join(argv(services["createbucket"]))
    found = []
    for name, service in services.items():
        env = env_of_service(service)
        url = env.get("MMSERVE_STORE_URL", "")
        if url.startswith("s3://"):
            bucket = url[5:].split("/")[0]
            if not re.search(rf"mc mb (--\S+ )*local/{re.escape(bucket)}\b", made):
                found.append(f"{name}: bucket {bucket!r} of MMSERVE_STORE_URL is never made")
            if f"local {env.get('AWS_ENDPOINT_URL')} " not in made:
                found.append(f"{name}: AWS_ENDPOINT_URL is not the server createbucket uses")
    return found
