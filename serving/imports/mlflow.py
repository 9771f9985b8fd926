"""Import a model from MLflow: ``mmserve models import models:/churn/3 --name churn``.

The source is a model registry version (``models:/<name>/<version>``), an alias of one
(``models:/<name>@<alias>``) or a run's logged model (``runs:/<run_id>/<path>``), at the
tracking server ``tracking_uri`` names (the CLI's ``--tracking-uri``, or
``MLFLOW_TRACKING_URI``, which MLflow's client also reads itself). It is downloaded with
MLflow's client, its ``MLmodel`` file read as data, and its flavor registered through
:meth:`Registry.register <serving.registry.Registry.register>` as if it had been registered
directly: scikit-learn as skops (a pickle only with ``trust_pickle``), XGBoost, LightGBM and
ONNX natively, a pyfunc as the user's code (only with ``trust_code``); the signature types
the inputs. The new version's tags record where it came from::

    mlflow.source          the URI imported        mlflow.model_name, mlflow.model_version
    mlflow.tracking_uri    (without credentials)   mlflow.model_id (MLflow 3), mlflow.flavor
    mlflow.run_id          the run that logged it  mlflow.pickle_sha256 (a pickle read)

MLflow (the ``mlflow`` extra, ``mlflow-skinny``) is imported only here, and only when called.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from serving.imports import _flavors, _mlmodel, _source
from serving.refs import validate_name
from serving.runtimes import Trust

if TYPE_CHECKING:
    from serving.metadata import Approval, ModelVersion
    from serving.registry import Registry

FLAVORS = _flavors.FLAVORS
"""The MLflow flavors mmserve imports, in the order one is chosen when a model has several."""


def import_model(
    registry: Registry,
    source: str,
    name: str,
    *,
    tracking_uri: str | None = None,
    mlflow_flavor: str | None = None,
    alias: str | None = None,
    trust_pickle: bool = False,
    trust_code: bool = False,
    trusted_types: Iterable[str] = (),
    description: str = "",
    tags: Mapping[str, str] | None = None,
    approval: Approval | None = None,
    force: bool = False,
) -> ModelVersion:
    """Register the MLflow model ``source`` as the next version of ``name``.

    ``mlflow_flavor`` picks one of the model's flavors (default: the first of
    :data:`FLAVORS` it has); the trust flags are :meth:`Registry.register`'s, and are asked
    for before anything that runs code is read. Failures: :class:`InvalidName` (a URI
    that is none), :class:`SourceNotFound` (no such model, version, alias, run or files),
    :class:`SourceUnavailable` (MLflow failed), :class:`ImportRefused` (a flavor, format or
    signature type mmserve does not take), :class:`UntrustedArtifact` (a pickle or code not
    trusted), :class:`MissingRuntime` (MLflow, or the flavor's library, not installed)."""
    validate_name(name)
    if alias is not None:
        validate_name(alias, "alias")
    _source.check(source)
    trust = Trust(tuple(sorted(set(trusted_types))), trust_pickle, trust_code)
    with tempfile.TemporaryDirectory(prefix="mmserve-import-") as work:
        fetched = _source.fetch(source, tracking_uri, Path(work, "download"))
        mlmodel = _mlmodel.read(fetched.folder, source)
        made = _flavors.artifact(mlmodel, fetched.folder, Path(work), source, trust, mlflow_flavor)
        recorded = dict(fetched.tags)
        if mlmodel.run_id and "mlflow.run_id" not in recorded:
            recorded["mlflow.run_id"] = mlmodel.run_id
        if mlmodel.model_id:
            recorded["mlflow.model_id"] = mlmodel.model_id
        return registry.register(
            made.model,
            name,
            alias=alias,
            schema=made.schema,
            nullable=made.nullable,
            flavor=made.flavor,
            trust_pickle=made.trust.pickle,
            trust_code=made.trust.code,
            trusted_types=made.trust.types,
            description=description,
            tags={**recorded, **made.tags, **(tags or {})},
            approval=approval,
            force=force,
        )
