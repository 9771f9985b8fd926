"""The model registry: versions, aliases, approval, integrity-checked loading, the cache.

Store layout (the store is the source of truth; nothing else holds registry state)::

    registry/<name>/<version>/.claim          exclusive marker: who owns the number
    registry/<name>/<version>/model.<ext>     the artifact (skops, trusted pickle, ubj...)
    registry/<name>/<version>/model.json      metadata; a version exists once this does
    registry/<name>/aliases.json              {alias: version}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import pyarrow as pa

from serving import runtimes, trust
from serving._resolutions import Resolutions
from serving.cache import ModelCache
from serving.codecs import read_file
from serving.errors import (
    AliasInUse,
    AliasNotFound,
    AlreadyExists,
    ModelNotFound,
    NotApproved,
    ObjectNotFound,
    StoreUnavailable,
    TamperedArtifact,
    UntrustedArtifact,
    VersionInUse,
    VersionNotFound,
)
from serving.metadata import Approval, Method, ModelVersion, infer_inputs
from serving.predictor import Predictor
from serving.refs import ModelRef, validate_name
from serving.settings import RegistrySettings, Settings
from serving.store import Store

if TYPE_CHECKING:  # pandas costs a server ~50 MB; only a caller's own frames need it
    import pandas as pd

InputExample: TypeAlias = "pa.Table | pd.DataFrame | str | Path"


class Registry:
    """Registered models in a :class:`Store`, and a cache of the ones loaded."""

    def __init__(
        self,
        store: Store,
        settings: RegistrySettings | None = None,
        cache: ModelCache | None = None,
    ):
        self.store = store
        self.settings = settings or RegistrySettings()
        self.cache = cache or ModelCache()
        self._resolved = Resolutions(self.settings)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Registry:
        settings = settings or Settings()
        cache = ModelCache(settings.cache.max_models, int(settings.cache.max_memory_mb * 2**20))
        return cls(Store.from_url(settings.store_url, settings.aws), settings.registry, cache)

    # -- registering ---------------------------------------------------------------------

    def register(
        self,
        model: Any,
        name: str,
        *,
        alias: str | None = None,
        input_example: InputExample | None = None,
        schema: Mapping[str, str] | None = None,
        nullable: Iterable[str] = (),
        method: Method | None = None,
        flavor: runtimes.Flavor | None = None,
        trust_pickle: bool = False,
        trust_code: bool = False,
        trusted_types: Iterable[str] = (),
        description: str = "",
        tags: Mapping[str, str] | None = None,
        approval: Approval | None = None,
        extra_columns: Literal["ignore", "reject"] = "ignore",
        row_block: int | None = None,
        force: bool = False,
        compile: Literal["onnx"] | None = None,
        compile_tolerance: float | None = None,
    ) -> ModelVersion:
        """Register a model object (a scikit-learn estimator, an XGBoost model...) or an
        artifact file (``.skops``, ``.ubj``...; ``.joblib``/``.pkl`` only with
        ``trust_pickle``; a folder of Python code only with ``trust_code``) as the next
        version of ``name``. The flavor is told from the object's library or the file's name
        and content unless ``flavor`` names it. ``row_block`` defaults to the runtime's:
        1 for tree models (XGBoost, LightGBM, an ONNX tree ensemble), else 8.
        ``compile="onnx"`` registers a scikit-learn model as its ONNX graph, checked on the
        input example to answer alike within ``compile_tolerance`` (see
        :mod:`serving.runtimes._compile`)."""
        validate_name(name)
        approval = approval or self.settings.default_approval
        if alias is not None:
            self._check_alias_target(
                f"{name}:<new>", validate_name(alias, "alias"), approval, force
            )
        trust = runtimes.Trust(tuple(sorted(set(trusted_types))), trust_pickle, trust_code)
        data, flavor, native, trusted = _artifact(model, flavor, trust)
        runtime = runtimes.runtime(flavor)
        example = _as_table(input_example)
        about = runtime.describe(native, method)
        inputs = infer_inputs(
            about.features,
            about.count,
            example,
            dict(schema) if schema else None,
            nullable,
            about.feature_types,
            about.categories,
            about.content_types,
            about.paths,
            about.shapes,
        )
        mv = ModelVersion(
            name=name,
            version=0,  # claimed below, once the model has proved it loads and predicts
            flavor=flavor,
            artifact=f"model.{runtimes.extension(flavor)}",
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            task=about.task,
            method=about.method,
            inputs=inputs,
            outputs=about.outputs,
            output_types=about.output_types,
            output_content_types=about.output_content_types,
            output_shapes=about.output_shapes,
            classes=about.classes,
            row_block=about.row_block if row_block is None else row_block,
            extra_columns=extra_columns,
            trusted_types=trusted,
            trust_pickle=flavor == "sklearn-pickle",
            trust_code=flavor == "python",
            files=about.files,
            requirements=about.requirements,
            libraries=runtimes.library_versions(runtime.PACKAGES),
            created=datetime.now(UTC),
            description=description,
            tags=dict(tags or {}),
            approval=approval,
        )
        if compile is not None:  # the graph is registered in the model's place
            from serving.runtimes import _compile

            threads = self.settings.model_threads
            data, native, mv = _compile.compiled(
                native, mv, example, compile, compile_tolerance, row_block, threads
            )
            runtime = runtimes.runtime(mv.flavor)
        if example is not None:  # fail at registration, not at the first request
            model = runtime.wrap(native, mv, self.settings.model_threads)
            Predictor(mv, model).predict(example.slice(0, 16))
        version = self._claim_version(name)
        mv = mv.model_copy(update={"version": version, "created": datetime.now(UTC)})
        self.store.write(self._key(name, version, mv.artifact), data)
        self.store.write(
            self._key(name, version, "model.json"), mv.model_dump_json(indent=2).encode()
        )
        self._resolved.clear()  # a bare name may now mean this version
        if alias is not None:
            self.set_alias(name, alias, version, force=force)
        return mv

    def _claim_version(self, name: str) -> int:
        """The next free version number, owned exclusively even against other processes."""
        taken = {
            int(k.split("/")[0]) for k in self.store.walk(f"registry/{name}") if k[0].isdigit()
        }
        version = max(taken, default=0) + 1
        while True:
            try:
                self.store.create(self._key(name, version, ".claim"), b"")
                return version
            except AlreadyExists:
                version += 1

    # -- reading -------------------------------------------------------------------------

    def models(self) -> list[str]:
        return [n for n in self.store.list("registry") if self.version_numbers(n)]

    def version_numbers(self, name: str) -> list[int]:
        keys = self.store.walk(f"registry/{validate_name(name)}")
        return sorted(
            int(k.split("/")[0]) for k in keys if k.endswith("/model.json") and k[0].isdigit()
        )

    def versions(self, name: str) -> list[ModelVersion]:
        return [self._read_version(name, v) for v in self.version_numbers(name)]

    def get(self, ref: str) -> ModelVersion:
        """The metadata of the version ``ref`` resolves to."""
        return self._read_version(*self.resolve(ref))

    def aliases(self, name: str) -> dict[str, int]:
        try:
            return dict(json.loads(self.store.read(f"registry/{validate_name(name)}/aliases.json")))
        except ObjectNotFound:
            return {}

    def resolve(self, ref: str) -> tuple[str, int]:
        """``(name, version)`` for ``name``, ``name:3`` or ``name@alias``. Answers are kept
        ``alias_ttl_s``: a server resolves on every request, and an alias moved by another
        process is seen within that time (at once when moved through this registry). While
        the store cannot be reached, the last answer is served for ``stale_resolution_s``
        after the store gave it (:meth:`staleness` says how old it is); past that, or with
        no answer to fall back on, :class:`StoreUnavailable`."""
        known = self._resolved.fresh(ref)
        if known is not None:
            return known
        try:
            answer = self._resolve(ref)
        except StoreUnavailable:
            stale = self._resolved.fallback(ref)
            if stale is None:
                raise
            return stale
        if ref != f"{answer[0]}:{answer[1]}":  # a pinned version needs no remembering
            self._resolved.confirmed(ref, answer)
        return answer

    def resolved(self, ref: str) -> tuple[str, int] | None:
        """What ``ref`` resolves to without touching the store (so the event loop may ask):
        an answer within ``alias_ttl_s``, or a stale one while the store is away; ``None``
        when that is not known."""
        return self._resolved.fresh(ref)

    def staleness(self, ref: str) -> float | None:
        """Seconds since the store last confirmed what ``ref`` resolves to, when that answer
        is served stale because the store could not be reached; ``None`` otherwise."""
        return self._resolved.staleness(ref)

    def servable_references(self) -> dict[str, tuple[tuple[str, int], float]]:
        """References this registry can resolve without the store for now, with the age of
        their answers (what a server keeps serving through a store outage)."""
        return self._resolved.servable()

    def _resolve(self, ref: str) -> tuple[str, int]:
        r = ModelRef.parse(ref)
        if r.version is not None:
            if self.cache.entry((r.name, r.version)) is None and not self.store.exists(
                self._key(r.name, r.version, "model.json")
            ):
                self._require_model(r.name)
                raise VersionNotFound(r.name, r.version)
            return r.name, r.version
        aliases = self.aliases(r.name)
        if r.alias is not None:
            if r.alias not in aliases:
                self._require_model(r.name)
                raise AliasNotFound(r.name, r.alias)
            return r.name, aliases[r.alias]
        if "production" in aliases:
            return r.name, aliases["production"]
        return r.name, self._require_model(r.name)[-1]

    # -- changing ------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int, *, force: bool = False) -> None:
        validate_name(alias, "alias")
        mv = self._read_version(name, version)
        self._check_alias_target(mv.ref, alias, mv.approval, force)
        self._update_aliases(name, lambda aliases: {**aliases, alias: version})
        self._resolved.clear()

    def remove_alias(self, name: str, alias: str) -> None:
        if alias not in self.aliases(name):
            raise AliasNotFound(name, alias)
        self._update_aliases(name, lambda aliases: {k: v for k, v in aliases.items() if k != alias})
        self._resolved.clear()

    def set_approval(self, ref: str, approval: Approval, *, force: bool = False) -> ModelVersion:
        """Approve or reject a version (SageMaker's model-package approval status)."""
        name, version = self.resolve(ref)
        if approval != "approved" and not force:
            for alias, target in self.aliases(name).items():
                if target == version and alias in self.settings.protected_aliases:
                    raise AliasInUse(f"{name}:{version}", alias)

        def change(current: bytes | None) -> bytes:
            if current is None:
                raise VersionNotFound(name, version)
            mv = ModelVersion.model_validate_json(current)
            return mv.model_copy(update={"approval": approval}).model_dump_json(indent=2).encode()

        data = self.store.update(self._key(name, version, "model.json"), change)
        return ModelVersion.model_validate_json(data)

    def delete_version(self, name: str, version: int, *, users: Iterable[str] = ()) -> None:
        """Remove a version's objects from the store and from this process's cache, refused
        (:class:`VersionInUse`) while aliases point at it or ``users`` (what else names it,
        such as endpoints, as the caller found them) is not empty. ``model.json`` goes first:
        from then on no reader finds the version, so none loads half of one. Its ``.claim``
        stays, so the number is never given to another model."""
        mv = self._read_version(name, version)
        aliases = sorted(a for a, v in self.aliases(name).items() if v == version)
        in_use = [*(f"alias {a!r}" for a in aliases), *users]
        if in_use:
            raise VersionInUse(mv.ref, in_use)
        folder = f"registry/{name}/{version}"
        self.store.delete(f"{folder}/model.json")
        for key in self.store.walk(folder):
            if key not in (".claim", "model.json"):
                self.store.delete(f"{folder}/{key}")
        self.cache.discard((name, version))
        self._resolved.clear()  # a bare name may have meant this version

    # -- loading -------------------------------------------------------------------------

    def load(self, ref: str) -> Predictor:
        """The predictor for ``ref``: cached, or loaded from the store and integrity-checked."""
        name, version = self.resolve(ref)
        return self.cache.get_or_load((name, version), lambda: self._load(name, version))

    def _load(self, name: str, version: int) -> tuple[Predictor, int]:
        mv = self._read_version(name, version)
        key = self._key(name, version, mv.artifact)
        data = self.store.read(key)
        actual = hashlib.sha256(data).hexdigest()
        if actual != mv.sha256:
            raise TamperedArtifact(key, mv.sha256, actual)
        trust.check(self.settings, mv.ref, actual)  # before any byte of it is decoded
        runtime = runtimes.runtime(mv.flavor)
        trusted = runtimes.Trust(tuple(mv.trusted_types), mv.trust_pickle, mv.trust_code)
        native = runtime.load(data, mv.flavor, trusted, mv.ref)
        return Predictor(mv, runtime.wrap(native, mv, self.settings.model_threads)), mv.size_bytes

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _key(name: str, version: int, leaf: str) -> str:
        return f"registry/{name}/{version}/{leaf}"

    def _read_version(self, name: str, version: int) -> ModelVersion:
        try:
            return ModelVersion.model_validate_json(
                self.store.read(self._key(validate_name(name), version, "model.json"))
            )
        except ObjectNotFound:
            self._require_model(name)
            raise VersionNotFound(name, version) from None

    def _require_model(self, name: str) -> list[int]:
        versions = self.version_numbers(name)
        if not versions:
            raise ModelNotFound(name)
        return versions

    def _check_alias_target(self, ref: str, alias: str, approval: str, force: bool) -> None:
        if alias in self.settings.protected_aliases and approval != "approved" and not force:
            raise NotApproved(ref, approval, alias)

    def _update_aliases(self, name: str, change: Any) -> None:
        def apply(current: bytes | None) -> bytes:
            aliases = json.loads(current) if current else {}
            return json.dumps(change(aliases), indent=2, sort_keys=True).encode()

        self.store.update(f"registry/{name}/aliases.json", apply)


def _artifact(
    model: Any, flavor: runtimes.Flavor | None, trust: runtimes.Trust
) -> tuple[bytes, runtimes.Flavor, Any, list[str]]:
    """``(artifact bytes, flavor, model, types to trust on load)`` for a model object, or
    for an artifact file, which is loaded only as far as it was explicitly trusted."""
    if not isinstance(model, str | Path):
        flavor = flavor or runtimes.flavor_of(model)
        runtime = runtimes.runtime(flavor)
        if flavor == "sklearn-pickle" and not trust.pickle:
            runtime.load(b"", flavor, runtimes.Trust(), "a pickle artifact")  # refuses
        if flavor == "python" and not trust.code:  # its code will run in every server
            runtime.load(b"", flavor, runtimes.Trust(), type(model).__qualname__)  # refuses
        data = runtime.dump(model, flavor)
        # The model came from the registering process itself: its types are trusted.
        return data, flavor, model, runtime.untrusted_types(data, flavor)
    path = Path(model)
    try:
        data = b"" if path.is_dir() else path.read_bytes()
    except OSError as err:
        raise UntrustedArtifact(str(path), f"cannot read it: {err.strerror}") from None
    flavor = flavor or runtimes.flavor_of_file(path, data)
    runtime = runtimes.runtime(flavor)
    if path.is_dir():
        if not hasattr(runtime, "pack"):
            raise UntrustedArtifact(str(path), f"a folder is no {flavor} model: --flavor python")
        data = runtime.pack(path)
    runtimes.probe(flavor, data, str(path))
    native = runtime.load(data, flavor, trust, str(path))
    return data, flavor, native, runtime.untrusted_types(data, flavor)


def _as_table(example: InputExample | None) -> pa.Table | None:
    if example is None or isinstance(example, pa.Table):
        return example
    if isinstance(example, str | Path):
        return read_file(Path(example))
    return pa.Table.from_pandas(example, preserve_index=False)
