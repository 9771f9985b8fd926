"""What makes deploy/k8s work as written, checked against the CLI, the settings and the
app: the problems of a set of manifests, each naming its object."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.settings import Settings
from tests.deploy.checks import (
    Refused,
    host_port,
    parse,
    problems_of_command,
    problems_of_environment,
    routes,
)

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
Doc = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet")


def kustomization() -> Doc:
    doc: Doc = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return doc


def load() -> list[Doc]:
    """Every manifest the kustomization lists, each document of each file."""
    return [
        doc
        for name in kustomization()["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc is not None
    ]


def problems(docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    found: list[str] = []
    for doc in docs:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] in WORKLOADS:
            found += _workload(where, doc, docs, monkeypatch)
        elif doc["kind"] == "Service":
            found += _service(where, doc, docs)
        elif doc["kind"] == "HorizontalPodAutoscaler":
            found += _autoscaler(where, doc, docs)
        elif doc["kind"] == "ScaledObject":
            found += _scaled(where, doc, docs)
    found += _beat(docs)
    return found


def find(docs: list[Doc], kinds: tuple[str, ...], name: str) -> Doc | None:
    return next((d for d in docs if d["kind"] in kinds and d["metadata"]["name"] == name), None)


def containers(doc: Doc) -> list[Doc]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def mmserve_args(container: Doc) -> list[str] | None:
    """The container's mmserve arguments (the image's entrypoint is ``mmserve``)."""
    if container["image"] != "mmserve" or "command" in container:
        return None
    return [str(a) for a in container.get("args", [])]


def params(container: Doc) -> tuple[str, dict[str, Any]]:
    args = mmserve_args(container)
    try:
        return parse(args) if args is not None else ("", {})
    except Refused:
        return "", {}  # reported as the command's problem


def environment(container: Doc, docs: list[Doc]) -> tuple[dict[str, str], list[str]]:
    """What the container's environment holds (its ConfigMaps and Secrets, then ``env``),
    and the ConfigMaps and Secrets it names that do not exist."""
    env: dict[str, str] = {}
    missing: list[str] = []
    for source in container.get("envFrom", []):
        kind, ref = ("ConfigMap", "configMapRef")
        if "secretRef" in source:
            kind, ref = ("Secret", "secretRef")
        doc = find(docs, (kind,), source[ref]["name"])
        if doc is None:
            missing.append(f"missing {kind} {source[ref]['name']}")
            continue
        data = {k: str(v) for k, v in (doc.get("data") or {}).items()}
        if kind == "Secret":  # a Secret's data is base64; its stringData is not
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        env.update(data)
        env.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
    env.update({e["name"]: str(e.get("value", "")) for e in container.get("env", [])})
    return env, missing


def _workload(where: str, doc: Doc, docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    found = []
    labels = doc["spec"]["template"]["metadata"]["labels"]
    if not doc["spec"]["selector"]["matchLabels"].items() <= labels.items():
        found.append(f"{where}: its selector does not match its pods' labels")
    for container in containers(doc):
        args = mmserve_args(container)
        if args is None:
            continue
        found += [f"{where}: {p}" for p in problems_of_command(args)]
        env, missing = environment(container, docs)
        found += [f"{where}: {m}" for m in missing]
        found += problems_of_environment(env, where, monkeypatch)
        for setting in ("MMSERVE_BROKER_URL", "MMSERVE_REDIS_URL"):
            if setting in env and (problem := redis_service(env[setting], docs)) is not None:
                found.append(f"{where}: {setting}: {problem}")
        found += _ports(where, container)
    return found


def port_of(container: Doc, port: int | str) -> int | None:
    """A probe's or Service's port as a number: a named one resolved in the container."""
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    return named.get(port)


def _ports(where: str, container: Doc) -> list[str]:
    """The container's ports are the ones its command opens; each probe asks one of them,
    at a route the app (or the consumer's metrics endpoint) answers."""
    command, given = params(container)
    opened = {int(given[k]) for k in ("port", "metrics_port") if given.get(k) is not None}
    if not command:
        return []
    found = [
        f"{where}: containerPort {p['containerPort']} is not a port `mmserve {command}` opens"
        for p in container.get("ports", [])
        if p["containerPort"] not in opened
    ]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(kind, {}).get("httpGet")
        if probe is None:
            continue
        port = port_of(container, probe["port"])
        if port not in opened:
            found.append(f"{where}: the {kind} asks port {probe['port']}, which is not opened")
        elif port == given.get("metrics_port") and probe["path"] != "/metrics":
            found.append(f"{where}: the {kind} asks {probe['path']}, not /metrics")
        elif port == given.get("port") and probe["path"] not in routes():
            found.append(f"{where}: the {kind} asks {probe['path']}, which is no route of the app")
    return found


def selected(doc: Doc, docs: list[Doc]) -> list[Doc]:
    wanted = doc["spec"]["selector"].items()
    return [
        d
        for d in docs
        if d["kind"] in WORKLOADS and wanted <= d["spec"]["template"]["metadata"]["labels"].items()
    ]


def _service(where: str, doc: Doc, docs: list[Doc]) -> list[str]:
    pods = selected(doc, docs)
    if len(pods) != 1:
        return [f"{where}: selects {len(pods)} workloads"]
    found = []
    for port in doc["spec"]["ports"]:
        if not any(port_of(c, port["targetPort"]) for c in containers(pods[0])):
            found.append(f"{where}: targetPort {port['targetPort']} is no port of its pods")
    return found


def _autoscaler(where: str, doc: Doc, docs: list[Doc]) -> list[str]:
    target = find(docs, ("Deployment",), doc["spec"]["scaleTargetRef"]["name"])
    if target is None:
        return [
            f"{where}: scales {doc['spec']['scaleTargetRef']['name']!r}, which is no Deployment"
        ]
    cpu = any(m.get("resource", {}).get("name") == "cpu" for m in doc["spec"]["metrics"])
    if cpu and not all(
        "cpu" in c.get("resources", {}).get("requests", {}) for c in containers(target)
    ):
        return [f"{where}: scales on CPU, but its pods request none"]
    return []


def redis_service(address: str, docs: list[Doc]) -> str | None:
    """What is wrong with a Redis ``host:port`` (or URL): a Service of the namespace?"""
    host, port = host_port(address if "://" in address else f"redis://{address}", 6379)
    service = find(docs, ("Service",), host.split(".")[0])
    namespace = kustomization()["namespace"]
    if service is None or host not in (
        service["metadata"]["name"],
        f"{service['metadata']['name']}.{namespace}.svc.cluster.local",
    ):
        return f"{host} is no Service of namespace {namespace}"
    if port not in [p["port"] for p in service["spec"]["ports"]]:
        return f"Service {host.split('.')[0]} has no port {port}"
    return None


def _scaled(where: str, doc: Doc, docs: list[Doc]) -> list[str]:
    target = find(docs, ("Deployment",), doc["spec"]["scaleTargetRef"]["name"])
    if target is None:
        return [f"{where}: scales {doc['spec']['scaleTargetRef']['name']!r}, no Deployment"]
    if "replicas" in target["spec"]:
        return [f"{where}: Deployment {target['metadata']['name']} sets replicas, KEDA's to set"]
    container = containers(target)[0]
    env = environment(container, docs)[0]
    found: list[str] = []
    for trigger in doc["spec"]["triggers"]:
        meta = trigger["metadata"]
        numbers = [k for k, v in meta.items() if not isinstance(v, str)]
        if numbers:  # KEDA's CRD takes strings only: the API server refuses `listLength: 4`
            found.append(f"{where}: trigger metadata {', '.join(numbers)} must be strings")
        redis = "MMSERVE_BROKER_URL" if trigger["type"] == "redis" else "MMSERVE_REDIS_URL"
        url = env.get(redis) or env.get("MMSERVE_BROKER_URL", "")
        host, port = host_port(url, 6379)
        db = url.rsplit("/", 1)[-1] or "0"
        if (meta["address"], meta.get("databaseIndex", "0")) != (f"{host}:{port}", db):
            found.append(f"{where}: watches {meta['address']} db {meta.get('databaseIndex', '0')}"
                         f", the pods use {url}")  # fmt: skip
        if (problem := redis_service(meta["address"], docs)) is not None:
            found.append(f"{where}: {problem}")
        if trigger["type"] == "redis":
            found += _jobs(where, doc, target, meta, env)
        elif trigger["type"] == "redis-streams":
            found += _stream(where, meta, container)
        else:
            found.append(f"{where}: unexpected trigger {trigger['type']!r}")
    return found


def _jobs(where: str, doc: Doc, target: Doc, meta: Doc, env: dict[str, str]) -> list[str]:
    """Workers scale on the jobs' queue (a Redis list of its name), to zero, and a stopped
    worker gets as long as a job may run to finish its jobs."""
    jobs = Settings.model_fields["jobs"].default  # the defaults, unless the pods set them
    queue = env.get("MMSERVE_JOBS__QUEUE", jobs.queue)
    limit = float(env.get("MMSERVE_JOBS__TIME_LIMIT_S", jobs.time_limit_s))
    found = []
    if params(containers(target)[0])[0] not in ("worker", ""):  # "": reported already
        found.append(f"{where}: scales something else than `mmserve worker` on the jobs' queue")
    if meta["listName"] != queue:
        found.append(f"{where}: listName {meta['listName']!r} is not the jobs' queue {queue!r}")
    if doc["spec"].get("minReplicaCount", 1) != 0:
        found.append(f"{where}: workers do not scale to zero")
    grace = target["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    if grace < limit:
        found.append(f"{where}: a stopped worker gets {grace} s, a job may run {limit:g} s")
    return found


def _stream(where: str, meta: Doc, container: Doc) -> list[str]:
    """The streamer scales on the lag (or pending entries) of the group it consumes in."""
    command, given = params(container)
    found = []
    if command not in ("stream", ""):
        found.append(f"{where}: scales something else than `mmserve stream` on a stream")
    watched = (meta["stream"], meta.get("consumerGroup"))
    if watched != (given.get("source"), given.get("group")):
        found.append(f"{where}: watches {'/'.join(map(str, watched))}, the consumers read "
                     f"{given.get('source')}/{given.get('group')}")  # fmt: skip
    if not {"lagCount", "pendingEntriesCount"} & set(meta):
        found.append(f"{where}: scales on neither the group's lag nor its pending entries")
    return found


def _beat(docs: list[Doc]) -> list[str]:
    beats = [
        d
        for d in docs
        if d["kind"] == "Deployment" and any(params(c)[0] == "beat" for c in containers(d))
    ]
    if len(beats) != 1:
        return [f"{len(beats)} Deployments run the beat"]
    spec = beats[0]["spec"]
    if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
        return [
            "the beat runs more than once (replicas 1 and strategy Recreate, or a rollout runs two)"
        ]
    return []
