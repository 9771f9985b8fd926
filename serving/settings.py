"""Every knob of mmserve, read once from ``MMSERVE_*`` (and the standard ``AWS_*``) variables.

The CLI or an app factory builds one :class:`Settings` and passes it (or the part a
component needs) down; nothing else reads the environment.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class AwsSettings(BaseSettings):
    """S3 access for ``s3://`` store URLs, under the standard AWS variable names."""

    model_config = SettingsConfigDict(
        env_prefix="AWS_", extra="ignore", use_attribute_docstrings=True, validate_by_name=True
    )

    endpoint_url: str | None = None
    """An S3-compatible server (MinIO, moto, Ceph...) instead of AWS itself."""
    access_key_id: SecretStr | None = None
    """Access key; unset means the default AWS credential chain."""
    secret_access_key: SecretStr | None = None
    """Secret key paired with the access key."""
    region: str = Field(
        "us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    """Region of the bucket."""
    part_mb: int = Field(16, ge=5, le=5120, validation_alias=AliasChoices("MMSERVE_S3_PART_MB"))
    """Part size of the multipart uploads that write objects to S3 (an object up to one part
    is a single PUT); an object holds at most 10,000 parts, and a write holds one in memory."""
    connect_timeout_s: float = Field(
        2.0, gt=0, validation_alias=AliasChoices("MMSERVE_STORE_CONNECT_TIMEOUT_S")
    )
    """Longest an S3 store request waits to connect before it is tried again or fails."""
    request_timeout_s: float = Field(
        5.0, gt=0, validation_alias=AliasChoices("MMSERVE_STORE_REQUEST_TIMEOUT_S")
    )
    """Longest an S3 store request waits for the server's next bytes (not for a whole large
    transfer) before it is tried again or fails: a hanging store is a 503 naming it within
    about ``AWS_MAX_ATTEMPTS`` times this, well below ``MMSERVE_MODEL_LOAD_WAIT_S``."""
    max_attempts: int = Field(3, ge=1)
    """Tries of each S3 store request (the first one and its retries, with backoff)."""


class CacheSettings(BaseModel):
    """Bounds of the in-memory cache of loaded models."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    max_models: int = Field(32, ge=1)
    """Most models kept loaded at once."""
    max_memory_mb: float = Field(4096, gt=0)
    """Most memory (estimated from artifact sizes) kept by loaded models."""


class RegistrySettings(BaseModel):
    """Policies of the model registry."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    default_approval: Literal["approved", "pending"] = "approved"
    """Approval status of a newly registered version; teams with a review step use ``pending``."""
    protected_aliases: list[str] = ["production"]
    """Aliases that may only point at approved versions (unless forced)."""
    alias_ttl_s: float = Field(2.0, ge=0)
    """How long a resolved reference (``churn``, ``churn@staging``) is reused before the store
    is asked again; 0 asks every time."""
    stale_resolution_s: float = Field(300.0, ge=0)
    """While the store cannot be reached, how long after the store last confirmed it a
    resolved reference keeps being served (answers carry ``X-MMServe-Stale-Seconds``); past
    it, 503 naming the store. 0: never served stale."""
    model_threads: int = Field(1, ge=1, le=256)
    """Threads one call of an XGBoost, LightGBM or ONNX model may use. 1 leaves the other
    cores to concurrent requests and worker processes; more speeds large calls on an idle
    machine. Above 1, an ONNX tree ensemble sums its trees in an order that depends on the
    batch's size: its answers may then differ in the last bit between modes."""
    trusted_sha256: list[str] = []
    """Trust root outside the store: sha256 of the only artifacts servers and workers may
    load (with ``trusted_sha256_file``); any other is refused (403) before it is decoded. Unset
    (both): the sha256 recorded in the store is trusted, and store writers can run code."""
    trusted_sha256_file: Path | None = None
    """A file of trusted artifact sha256 hashes, one a line (``#`` comments), read at every
    load; set, an artifact it (or ``trusted_sha256``) does not list is refused."""

    @field_validator("trusted_sha256")
    @classmethod
    def _sha256s(cls, hashes: list[str]) -> list[str]:
        for value in hashes:
            if not SHA256.fullmatch(value):
                raise ValueError(f"not a sha256: {value!r}")
        return [value.lower() for value in hashes]


class ModelServing(BaseModel):
    """How the real-time server treats one model; ``Settings.serving`` holds the defaults and
    ``Settings.models`` the per-model overrides."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    batching: bool = True
    """Join concurrent requests for the model into one model call."""
    max_batch_size: int = Field(64, ge=1)
    """Most requests joined into one call."""
    max_wait_ms: float = Field(2.0, ge=0)
    """How long a batch formed under load waits to fill up before its call; 0 joins what
    queued while the previous call ran. An idle model never waits."""
    max_concurrency: int = Field(256, ge=1)
    """Most in-flight requests for the model; more get 429 with Retry-After."""
    idle_ttl_s: float | None = Field(None, gt=0)
    """Serverless: unload the model after this long unused (None: the server's default)."""
    provisioned: bool = False
    """Serverless: keep the model loaded (warm) however long it is idle."""
    features: Path | None = None
    """A features file: each request row gets the model's window features, computed from
    the stream's state in Redis as of now (``mmserve stream --features``); set per model."""


class ServerlessSettings(BaseModel):
    """Scale to zero: idle models unload, the next request is a (measured) cold start."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    enabled: bool = False
    """Unload idle models (``mmserve serve --serverless``)."""
    idle_ttl_s: float = Field(300.0, gt=0)
    """Default time a model may stay unused before it is unloaded."""
    max_concurrency: int | None = Field(None, ge=1)
    """Most in-flight predict requests on the whole server; more get 429 (None: no cap)."""


class JobSettings(BaseModel):
    """Asynchronous jobs: limits, delivery and recovery."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    max_payload_bytes: int = Field(1024**3, gt=0)
    """Largest input a job may upload through the API (streamed to the store)."""
    batch_rows: int = Field(65_536, ge=1)
    """Rows of a job's table (CSV, JSON lines, parquet, Arrow) read and scored at a time, as
    a batch run reads them: a job's memory is a batch's, whatever the size of its input."""
    time_limit_s: float = Field(3600.0, gt=0)
    """Longest a job may run (a job may ask for less); past it, it fails with that reason."""
    max_deliveries: int = Field(3, ge=1)
    """A job whose worker died this many times while running it fails instead of looping."""
    lease_s: float = Field(60.0, gt=0)
    """A running job's lease, renewed by its worker a few times per period; a job whose
    lease lapsed (its worker died) is run again by the sweep."""
    sweep_interval_s: float = Field(60.0, gt=0)
    """How often the sweep looks for jobs whose queue message was lost."""
    sweep_grace_s: float = Field(30.0, ge=0)
    """How old a job must be before the sweep may re-enqueue it (submits still in flight)."""
    retries: int = Field(5, ge=0)
    """Retries, with backoff, of a job that met a transient error (store or Redis away)."""
    callback_attempts: int = Field(5, ge=1)
    """Attempts to deliver a notification, with backoff; a failing callback never fails the job."""
    callback_timeout_s: float = Field(10.0, gt=0)
    """Longest one notification attempt may take in all (connect, send, answer); a callback
    still silent then is cut off, and the attempt failed."""
    callback_allowed: list[str] = []
    """Hosts and networks (``10.0.0.0/8``), as JSON, that callbacks may reach besides public
    addresses: loopback, private, link-local, multicast and metadata addresses are refused
    unless listed. Empty: public addresses only."""

    @field_validator("callback_allowed")
    @classmethod
    def _networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:  # a network must be one; anything else is a host name
            if "/" in entry:
                ipaddress.ip_network(entry, strict=False)  # ValueError: refused at start
        return entries

    queue: str = "mmserve.jobs"
    """Celery queue of the jobs."""


class BatchSettings(BaseModel):
    """Batch runs started over HTTP, a queue or a schedule: where they may read and write,
    and how large an input may be."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    roots: list[str] = []
    """Folders and URL prefixes (``s3://bucket/prefix``), besides the store, where batch runs
    started over HTTP, a queue or a schedule may read and write, as JSON; empty: the store
    only. ``mmserve batch run`` (this machine's own user) is not confined."""
    max_input_files: int = Field(10_000, ge=1)
    """Most files and folders a batch input may list; past it the run is refused. The list
    is made once, when the run starts, and kept in its ``_run.json``."""
    max_file_bytes: int = Field(256 * 1024 * 1024, gt=0)
    """Largest file a batch run over files (images, documents: no tables) reads; a bigger
    one is a bad row naming its path and size. A model call takes files of at most this many
    bytes in all (or one file), and at most ``batch_rows`` of them."""


class StreamSettings(BaseModel):
    """Streaming (``mmserve stream``): batching, recovery and dead letters of a consumer."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    batch_size: int = Field(256, ge=1, le=4096)
    """Most events scored in one model call."""
    max_wait_ms: float = Field(5.0, ge=0)
    """Longest an event waits (from its entry's time) for its batch to fill up to
    ``batch_size``; 0 scores what one read returns."""
    block_ms: int = Field(500, ge=1)
    """How long an idle read waits for events before the consumer looks around again
    (claims, shutdown, the pending gauge)."""
    start: Literal["$", "0"] = "$"
    """Where a new consumer group starts: ``$`` at new events only, ``0`` at the stream's
    first entry (an existing group keeps its place)."""
    json_field: str = "data"
    """An event field holding a JSON object of features, instead of one field per feature."""
    id_field: str | None = None
    """An event field copied to each output (a transaction id); an event without it is
    dead-lettered."""
    claim_idle_ms: int = Field(30_000, ge=1)
    """Entries pending this long on a consumer (a dead one) are claimed by a live one; keep
    it well above the time one batch takes."""
    max_deliveries: int = Field(3, ge=1)
    """Deliveries an entry gets before it goes to the dead-letter stream (a model error
    every time, or consumers that died with it)."""
    follow: bool = True
    """Score with the version an alias points at now, picked up between batches; ``False``
    pins the version the reference named at start."""
    metrics_host: str = "127.0.0.1"
    """Interface of the Prometheus endpoint (``0.0.0.0`` lets a scraper elsewhere in)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Port of the consumer's Prometheus endpoint; unset: no endpoint."""


class DeploymentSettings(BaseModel):
    """Endpoints (``MMSERVE_ENDPOINTS``): how servers follow their state, and data capture."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    state_ttl_s: float = Field(1.0, gt=0)
    """How often a server reads the endpoints' configs and live state (weights, rollouts)
    from the store: every server follows a shift within this time."""
    reload_interval_s: float = Field(1.0, gt=0)
    """How often a server reads the endpoints file again (a changed file is applied again)."""
    seed: int | None = None
    """Seed of the traffic split of every endpoint that sets none (unset: random)."""
    capture_flush_rows: int = Field(1000, ge=1)
    """Captured rows that trigger a flush to the store before ``capture_flush_s``."""
    capture_flush_s: float = Field(5.0, gt=0)
    """Longest captured rows wait in memory before they are written."""
    capture_max_rows: int = Field(100_000, ge=1)
    """Most captured rows held in memory; past it new ones are dropped (and counted), never
    waited for."""
    max_shadows: int = Field(256, ge=1)
    """Most shadow requests in flight; past it a sampled request is not shadowed (counted)."""


class AdviseSettings(BaseModel):
    """``mmserve advise``: its thresholds and the unit prices of its rough monthly cost
    comparison. The prices are illustrative (roughly an on-demand 2-vCPU instance and a
    serverless GB-second, as clouds listed them in 2024); set your own to compare yours."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    instance_hour_usd: float = Field(0.23, ge=0)
    """Price of one instance for an hour: real time, async, batch and streaming run on them."""
    instance_concurrency: int = Field(2, ge=1)
    """Requests (or rows, or events) one instance works on at once (about its cores)."""
    processing_s: float = Field(0.01, gt=0)
    """Model time per request when ``--processing-s`` is not given."""
    serverless_gb_second_usd: float = Field(0.00002, ge=0)
    """Price of one GB of serverless memory for one second of processing."""
    serverless_memory_gb: float = Field(2.0, gt=0)
    """Memory of one serverless instance."""
    serverless_request_usd: float = Field(0.0000002, ge=0)
    """Price of one serverless request, on top of its duration."""
    cold_start_ms: float = Field(1000.0, ge=0)
    """A serverless cold start (the model loaded on the first request after an idle
    period): a latency target below it rules serverless out."""
    slow_request_s: float = Field(10.0, gt=0)
    """Processing past this is too slow for a synchronous request, even under the timeout:
    it holds a connection (and the client) that long; such requests are queued (async)."""
    spike_factor: float = Field(3.0, gt=1)
    """Busiest minute over the average one that makes traffic spiky (a capture read so);
    spiky real time is sized for that peak."""
    idle_share: float = Field(0.5, gt=0, le=1)
    """Share of the time with no request for longer than the serverless idle TTL that makes
    captured traffic rare (scale to zero pays)."""


class Settings(BaseSettings):
    """All of mmserve's settings. Nested groups use ``__``: ``MMSERVE_CACHE__MAX_MODELS=8``."""

    model_config = SettingsConfigDict(
        env_prefix="MMSERVE_",
        env_nested_delimiter="__",
        extra="ignore",
        env_ignore_empty=True,  # MMSERVE_BROKER_URL= (empty) is unset, not a URL
        use_attribute_docstrings=True,  # the docstrings below are the documentation
    )

    store_url: str = "./.mmserve"
    """Object store root: a local path, ``file://...`` or ``s3://bucket/prefix``."""
    broker_url: str | None = None
    """Celery broker (Redis); unset runs the async queue inside the server process."""
    redis_url: str | None = None
    """Redis for streaming and indexes; defaults to the broker URL."""
    admin_token: SecretStr | None = None
    """Bearer token for management routes; unset turns management routes off."""
    endpoints: Path | None = None
    """Endpoints YAML file (variants, shadow, serverless)."""
    deployment: DeploymentSettings = DeploymentSettings()
    """How servers follow the endpoints' state, and data capture (``MMSERVE_DEPLOYMENT__*``)."""
    schedules: Path | None = None
    """Schedules YAML file: batch runs that ``mmserve beat`` starts (cron or every N s)."""
    api_key: SecretStr | None = None
    """Key that predict routes require (``Authorization: Bearer`` or ``X-API-Key``); unset: open."""
    opentelemetry: bool = False
    """OpenTelemetry traces of every mode: a span per request (fast lane too), async job (the
    worker's continues its submit's trace), batch part and stream micro-batch, with model,
    version and rows; W3C ``traceparent`` honoured. Exported as the ``OTEL_*`` variables say
    (OTLP over HTTP by default; ``mmserve[otel]``), unless an SDK is set up already. Off, it
    costs nothing."""
    grpc_port: int | None = Field(None, ge=1, le=65535)
    """Also serve the Open Inference Protocol over gRPC on this port (needs ``mmserve[grpc]``)."""
    grpc_host: str = "127.0.0.1"
    """Interface the gRPC port binds; ``mmserve serve --host`` sets it with HTTP's."""
    max_payload_bytes: int = Field(6 * 1024 * 1024, gt=0)
    """Real-time request body limit (a gRPC message's too)."""
    max_decoded_bytes: int = Field(256 * 1024 * 1024, gt=0)
    """Most memory a body's rows may take once decoded (Arrow bytes, dictionary columns
    counted expanded), checked as they are read; past it, 413. Parquet and compressed Arrow
    expand far past their size (455 KB of parquet decoded to 3.2 GB): this, not the body
    limit, bounds a decode's memory. CSV and JSON bodies within the body limit stay well
    under it."""
    max_decoded_cells: int = Field(16 * 1024 * 1024, gt=0)
    """Most cells (rows times columns) of a body's rows once decoded; past it, 413. Columns of
    nulls take no bytes yet become a float each when scored: this bounds them."""
    request_timeout_s: float = Field(60.0, gt=0)
    """Real-time request timeout."""
    model_load_wait_s: float = Field(30.0, gt=0)
    """How long a request waits for its model to finish loading before a 503 with Retry-After."""
    serving: ModelServing = ModelServing()
    """Batching, concurrency and idle policy of every model, unless ``models`` says otherwise."""
    models: dict[str, ModelServing] = {}
    """Per-model overrides of ``serving``, as JSON:
    ``MMSERVE_MODELS='{"rf": {"max_batch_size": 128}}'``."""
    serverless: ServerlessSettings = ServerlessSettings()
    """Scale-to-zero policy."""
    jobs: JobSettings = JobSettings()
    """Asynchronous jobs (``MMSERVE_JOBS__TIME_LIMIT_S=600``...)."""
    batch: BatchSettings = BatchSettings()
    """Batch runs' allowed places and input bounds (``MMSERVE_BATCH__ROOTS='["/data"]'``...)."""
    stream: StreamSettings = StreamSettings()
    """The streaming consumer (``MMSERVE_STREAM__BATCH_SIZE=512``...)."""
    cache: CacheSettings = CacheSettings()
    """Loaded-model cache bounds."""
    registry: RegistrySettings = RegistrySettings()
    """Registry policies."""
    advise: AdviseSettings = AdviseSettings()
    """Thresholds and illustrative unit prices of ``mmserve advise`` (``MMSERVE_ADVISE__*``)."""
    aws: AwsSettings = Field(default_factory=AwsSettings)
    """S3 endpoint and credentials (``AWS_*`` variables)."""

    def serving_of(self, name: str) -> ModelServing:
        """The policy of model ``name``: its overrides over the defaults."""
        override = self.models.get(name)
        if override is None:
            return self.serving
        return self.serving.model_copy(update=override.model_dump(exclude_unset=True))

    @property
    def redis(self) -> str | None:
        """The Redis to use for streams and indexes: ``redis_url``, else the broker's."""
        return self.redis_url or self.broker_url


def reference() -> list[tuple[str, str, str]]:
    """Every setting as (its environment variable, what it does, its default), in the order
    they are declared: the README's configuration table is made from it."""
    rows: list[tuple[str, str, str]] = []
    _walk(Settings, "MMSERVE_", rows)
    return rows


def markdown() -> str:
    """:func:`reference` as a markdown table."""
    lines = ["| variable | meaning | default |", "|---|---|---|"]
    for variable, meaning, default in reference():
        escaped = meaning.replace("|", r"\|")  # a pipe would end the cell
        lines.append(f"| {variable} | {escaped} | {default} |")
    return "\n".join(lines) + "\n"


def _walk(model: type[BaseModel], prefix: str, rows: list[tuple[str, str, str]]) -> None:
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):  # its own prefix (AWS_)
            _walk(kind, str(kind.model_config.get("env_prefix", "")), rows)
        elif isinstance(kind, type) and issubclass(kind, BaseModel):
            _walk(kind, f"{prefix}{name.upper()}__", rows)
        else:
            rows.append((_variable(prefix, name, field), _text(field.description), _shown(field)))


def _variable(prefix: str, name: str, field: Any) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        first, *others = (str(choice) for choice in alias.choices)
        return f"`{first}`" + "".join(f" (or `{other}`)" for other in others)
    return f"`{prefix}{name.upper()}`"


def _text(description: str | None) -> str:
    return " ".join((description or "").split()).replace("``", "`")  # RST code to markdown


def _shown(field: Any) -> str:
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, (dict, list)):
        return f"`{json.dumps(default)}`"
    return f"`{default}`"


if __name__ == "__main__":  # python -m serving.settings: the table for the README
    print(markdown(), end="")
