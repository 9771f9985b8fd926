"""deploy/k8s against the CLI, the settings and the app: every manifest parses, every
mmserve container's arguments parse as ``mmserve`` parses them and its variables are
settings; probes ask routes the app has, on the port the command opens; Services and the
autoscaler reach what they name; KEDA watches the jobs' queue and the streamer's group on
the Redis the pods use; the beat is one. A copy with one typo is refused, naming it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.k8s import (
    K8S,
    WORKLOADS,
    Doc,
    containers,
    find,
    kustomization,
    load,
    params,
    problems,
)


def test_the_kustomization_lists_every_manifest_and_the_image() -> None:
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization()["resources"]) == files
    images = {c["image"] for d in load() if d["kind"] in WORKLOADS for c in containers(d)}
    assert images == {"mmserve", "redis:7.2-alpine"}
    assert [i["name"] for i in kustomization()["images"]] == ["mmserve"]


def test_every_manifest_is_a_named_kubernetes_object() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in load())
    assert kinds == [
        ("ConfigMap", "mmserve-config"),
        ("Deployment", "mmserve-api"),
        ("Deployment", "mmserve-beat"),
        ("Deployment", "mmserve-streamer"),
        ("Deployment", "mmserve-worker"),
        ("HorizontalPodAutoscaler", "mmserve-api"),
        ("Namespace", "mmserve"),
        ("ScaledObject", "mmserve-streamer"),
        ("ScaledObject", "mmserve-worker"),
        ("Secret", "mmserve-secrets"),
        ("Service", "mmserve-api"),
        ("Service", "mmserve-redis"),
        ("StatefulSet", "mmserve-redis"),
    ]
    assert all(d["apiVersion"] for d in load())


def test_the_manifests_have_no_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems(load(), monkeypatch) == []


def test_each_deployment_runs_its_subcommand_and_the_api_probes_its_health_routes() -> None:
    docs = load()
    commands = {
        d["metadata"]["name"]: params(containers(d)[0])[0]
        for d in docs
        if d["kind"] == "Deployment"
    }
    assert commands == {
        "mmserve-api": "serve",
        "mmserve-worker": "worker",
        "mmserve-beat": "beat",
        "mmserve-streamer": "stream",
    }
    api = containers(find(docs, ("Deployment",), "mmserve-api") or {})[0]
    probes = {k: api[k]["httpGet"]["path"] for k in ("readinessProbe", "livenessProbe")}
    assert probes == {"readinessProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}


def edit(docs: list[Doc], kind: str, name: str, change: Callable[[Doc], None]) -> list[Doc]:
    broken = copy.deepcopy(docs)
    doc = find(broken, (kind,), name)
    assert doc is not None
    change(doc)
    return broken


def first(doc: Doc) -> Doc:
    return containers(doc)[0]


def _set(target: Doc, key: str, value: Any) -> None:
    target[key] = value


BROKEN: list[tuple[str, str, str, Callable[[Doc], None], list[str]]] = [
    (
        "args typo",
        "Deployment", "mmserve-worker",
        lambda d: _set(first(d), "args", ["worker", "--concurency", "2"]),
        ["Deployment mmserve-worker: mmserve worker: No such option: --concurency "
         "(Possible options: --concurrency)"],
    ),
    (
        "variable typo",
        "ConfigMap", "mmserve-config",
        lambda d: d["data"].update(MMSERVE_STORE_URI="s3://x/y"),
        [f"Deployment mmserve-{n}: MMSERVE_STORE_URI is not a setting"
         for n in ("api", "worker", "beat", "streamer")],
    ),
    (
        "probe of no route",
        "Deployment", "mmserve-api",
        lambda d: first(d)["readinessProbe"]["httpGet"].update(path="/health"),
        ["Deployment mmserve-api: the readinessProbe asks /health, which is no route of the app"],
    ),
    (
        "probe of another port",
        "Deployment", "mmserve-streamer",
        lambda d: first(d)["livenessProbe"]["httpGet"].update(port=9101),
        ["Deployment mmserve-streamer: the livenessProbe asks port 9101, which is not opened"],
    ),
    (
        "container port the command does not open",
        "Deployment", "mmserve-api",
        lambda d: _set(first(d), "args", ["serve", "--host", "0.0.0.0", "--port", "8000"]),
        [
            "Deployment mmserve-api: containerPort 8080 is not a port `mmserve serve` opens",
            "Deployment mmserve-api: the startupProbe asks port http, which is not opened",
            "Deployment mmserve-api: the readinessProbe asks port http, which is not opened",
            "Deployment mmserve-api: the livenessProbe asks port http, which is not opened",
        ],
    ),
    (
        "Service to no port",
        "Service", "mmserve-api",
        lambda d: d["spec"]["ports"][0].update(targetPort="htp"),
        ["Service mmserve-api: targetPort htp is no port of its pods"],
    ),
    (
        "queue name",
        "ScaledObject", "mmserve-worker",
        lambda d: d["spec"]["triggers"][0]["metadata"].update(listName="mmserve.job"),
        ["ScaledObject mmserve-worker: listName 'mmserve.job' is not the jobs' queue "
         "'mmserve.jobs'"],
    ),
    (
        "a number where KEDA takes a string",
        "ScaledObject", "mmserve-worker",
        lambda d: d["spec"]["triggers"][0]["metadata"].update(listLength=4),
        ["ScaledObject mmserve-worker: trigger metadata listLength must be strings"],
    ),
    (
        "workers kept up",
        "ScaledObject", "mmserve-worker",
        lambda d: d["spec"].update(minReplicaCount=1),
        ["ScaledObject mmserve-worker: workers do not scale to zero"],
    ),
    (
        "grace shorter than a job",
        "Deployment", "mmserve-worker",
        lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=60),
        ["ScaledObject mmserve-worker: a stopped worker gets 60 s, a job may run 3600 s"],
    ),
    (
        "another Redis",
        "ScaledObject", "mmserve-worker",
        lambda d: d["spec"]["triggers"][0]["metadata"].update(address="redis:6380"),
        [
            "ScaledObject mmserve-worker: watches redis:6380 db 0, the pods use "
            "redis://mmserve-redis.mmserve.svc.cluster.local:6379/0",
            "ScaledObject mmserve-worker: redis is no Service of namespace mmserve",
        ],
    ),
    (
        "group typo",
        "ScaledObject", "mmserve-streamer",
        lambda d: d["spec"]["triggers"][0]["metadata"].update(consumerGroup="mmserve.scorer"),
        ["ScaledObject mmserve-streamer: watches mmserve.events/mmserve.scorer, the consumers "
         "read mmserve.events/mmserve.scorers"],
    ),
    (
        "two beats in a rollout",
        "Deployment", "mmserve-beat",
        lambda d: d["spec"].update(strategy={"type": "RollingUpdate"}),
        ["the beat runs more than once (replicas 1 and strategy Recreate, or a rollout runs two)"],
    ),
    (
        "missing Secret",
        "Deployment", "mmserve-beat",
        lambda d: first(d)["envFrom"][1]["secretRef"].update(name="mmserve-secret"),
        ["Deployment mmserve-beat: missing Secret mmserve-secret"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "name", "change", "expected"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_a_broken_copy_is_refused_naming_its_problem(
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    name: str,
    change: Callable[[Doc], None],
    expected: list[str],
) -> None:
    assert problems(edit(load(), kind, name, change), monkeypatch) == expected
