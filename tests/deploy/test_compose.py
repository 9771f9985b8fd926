"""docker-compose.yml and the Dockerfile against the CLI and the settings (Docker itself
does not run here): every mmserve command parses as ``mmserve`` parses it, every variable
is a setting with a value the settings take, the ports services talk to are the ports
they listen on, volumes are declared, dependencies exist and wait for what they can. A
copy with one typo is refused, naming it."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from tests.deploy.checks import http_check, parse, routes
from tests.deploy.compose import ROOT, Compose, argv, env_of_service, load, mmserve, problems


def test_the_compose_file_has_no_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems(load(), monkeypatch) == []


def test_every_mmserve_process_runs_the_subcommand_it_is_named_for() -> None:
    commands = {n: parse(argv(s))[0] for n, s in load()["services"].items() if mmserve(s)}
    assert commands == {"api": "serve", "worker": "worker", "beat": "beat", "streamer": "stream"}
    _, api = parse(argv(load()["services"]["api"]))
    assert (api["host"], api["port"]) == ("0.0.0.0", 8080)


def change(compose: Compose, service: str, **fields: Any) -> Compose:
    """A copy with ``fields`` of ``service`` replaced (never mutated in place: YAML anchors
    share their values between services)."""
    broken = copy.deepcopy(compose)
    broken["services"][service] = {**broken["services"][service], **fields}
    return broken


def env_of(compose: Compose, service: str, **changes: str) -> dict[str, str]:
    return {**env_of_service(compose["services"][service]), **changes}


BROKEN: list[tuple[str, Any, list[str]]] = [
    (
        "option typo",
        lambda c: change(c, "api", command=["serve", "--hots", "0.0.0.0", "--port", "8080"]),
        ["api: mmserve serve: No such option: --hots (Possible options: --host, --port)"],
    ),
    (
        "subcommand typo",
        lambda c: change(c, "beat", command=["baet"]),
        ["beat: mmserve: no subcommand 'baet'"],
    ),
    (
        "missing option",
        lambda c: change(c, "streamer", command=argv(c["services"]["streamer"])[:7]),
        ["streamer: mmserve stream: Missing option '--group'."],
    ),
    (
        "variable typo",
        lambda c: change(
            c, "worker", environment=env_of(c, "worker", MMSERVE_BROKR_URL="redis://redis:6379/0")
        ),
        ["worker: MMSERVE_BROKR_URL is not a setting"],
    ),
    (
        "bad value",
        lambda c: change(
            c, "worker", environment=env_of(c, "worker", MMSERVE_JOBS__TIME_LIMIT_S="soon")
        ),
        [
            "worker: setting jobs.time_limit_s: Input should be a valid number, unable to "
            "parse string as a number"
        ],
    ),
    (
        "URL to no service",
        lambda c: change(
            c, "beat", environment=env_of(c, "beat", MMSERVE_BROKER_URL="redis://rediss:6379/0")
        ),
        ["beat: MMSERVE_BROKER_URL names 'rediss', which is no service"],
    ),
    (
        "URL to a closed port",
        lambda c: change(
            c, "api", environment=env_of(c, "api", AWS_ENDPOINT_URL="http://minio:9002")
        ),
        [
            "api: AWS_ENDPOINT_URL asks minio:9002, which listens on [9000, 9001]",
            "api: AWS_ENDPOINT_URL is not the server createbucket uses",
        ],
    ),
    (
        "mapping to a port the API does not open",
        lambda c: change(c, "api", ports=["8080:8081"]),
        ["api: port mapping 8080:8081 targets no port the command opens"],
    ),
    (
        "check of a route that does not exist",
        lambda c: change(
            c,
            "api",
            healthcheck={
                "test": ["CMD", "python", "-c", "urlopen('http://127.0.0.1:8080/v2/health/redy')"]
            },
        ),
        ["api: the health check asks /v2/health/redy, which is no route of the app"],
    ),
    (
        "check of another port",
        lambda c: change(
            c,
            "streamer",
            healthcheck={
                "test": ["CMD", "python", "-c", "urlopen('http://127.0.0.1:9101/metrics')"]
            },
        ),
        ["streamer: the health check asks port 9101, the command opens [9100]"],
    ),
    (
        "no health check",
        lambda c: {
            **c,
            "services": {
                **c["services"],
                "beat": {k: v for k, v in c["services"]["beat"].items() if k != "healthcheck"},
            },
        },
        ["beat: no health check"],
    ),
    (
        "unescaped variable",
        lambda c: change(
            c,
            "worker",
            healthcheck={
                "test": [
                    "CMD-SHELL",
                    "celery --broker $MMSERVE_BROKER_URL inspect ping "
                    '--destination "mmserve@$${HOSTNAME}-1"',
                ]
            },
        ),
        ["worker: unescaped '$MMSERVE_BROKER_URL '… (write $$)"],
    ),
    (
        "unknown dependency",
        lambda c: change(
            c,
            "api",
            depends_on={
                "redis": {"condition": "service_healthy"},
                "minoi": {"condition": "service_healthy"},
            },
        ),
        ["api: depends on 'minoi', which is no service"],
    ),
    (
        "undeclared volume",
        lambda c: change(c, "redis", volumes=["redis-dat:/data"]),
        [
            "volume 'redis-dat' is used but not declared",
            "volume 'redis-data' is declared but not used",
        ],
    ),
    (
        "published twice",
        lambda c: change(c, "minio", ports=["9000:9000", "8080:9001"]),
        ["api: host port 8080 is published by minio too"],
    ),
    (
        "bucket never made",
        lambda c: change(
            c, "api", environment=env_of(c, "api", MMSERVE_STORE_URL="s3://models/store")
        ),
        ["api: bucket 'models' of MMSERVE_STORE_URL is never made"],
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_a_broken_copy_is_refused_naming_its_problem(
    monkeypatch: pytest.MonkeyPatch, mutate: Any, expected: list[str]
) -> None:
    assert problems(mutate(load()), monkeypatch) == expected


# -- the Dockerfile ----------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), in order."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_is_slim_non_root_and_runs_mmserve() -> None:
    steps = instructions()
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    values = {op: arg for op, arg in final}
    assert values["FROM"] == "python:3.11-slim"
    assert values["USER"] == "10001"  # numeric and not root: runAsNonRoot can check it
    assert yaml.safe_load(values["ENTRYPOINT"]) == ["mmserve"]
    command = yaml.safe_load(values["CMD"])
    assert parse(command)[0] == "serve"
    port = parse(command)[1]["port"]
    assert values["EXPOSE"] == str(port)
    check = http_check(values["HEALTHCHECK"])
    assert check is not None and check[0] == port and check[1] in routes()


def test_the_image_holds_every_package_pyproject_installs() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[(.*?)\]", pyproject)
    assert include is not None
    packages = {p.strip().strip('"').rstrip("*") for p in include[1].split(",")}
    copied = {arg.split()[0] for op, arg in instructions() if op == "COPY" and "--from" not in arg}
    assert packages <= copied
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert copied <= allowed  # .dockerignore lets each of them into the build
