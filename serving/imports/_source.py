"""Where an imported MLflow model comes from: a ``models:/`` or ``runs:/`` URI, looked up at
a tracking server with MLflow's client and downloaded into a local folder.

Only MLflow's client is used (``MlflowClient`` and ``mlflow.artifacts``): it reads the
registry and copies files, and loads nothing. MLflow reads its own environment too
(``MLFLOW_REGISTRY_URI``, ``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_HTTP_REQUEST_*``, the artifact
store's credentials): that is MLflow's configuration, not mmserve's. MLflow retries a
tracking server that does not answer for minutes by default; ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
and ``MLFLOW_HTTP_REQUEST_TIMEOUT`` shorten that.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from serving.errors import (
    InvalidName,
    MissingRuntime,
    SourceNotFound,
    SourceUnavailable,
    without_credentials,
)

_MODEL = re.compile(
    r"models:/(?P<name>[^/@]{1,256})(?:/(?P<version>[1-9][0-9]{0,9})|@(?P<alias>[^/@]{1,256}))/?"
)
_RUN = re.compile(
    r"runs:/(?P<run>[0-9A-Za-z_-]{1,64})/(?P<path>[\w.-]{1,256}(?:/[\w.-]{1,256})*)/?"
)
_RULE = "expected models:/<name>/<version>, models:/<name>@<alias> or runs:/<run_id>/<path>"
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
"""MLflow's error codes for a name, version, alias or run it does not have."""
T = TypeVar("T")


@dataclass(frozen=True)
class Fetched:
    """A model downloaded from MLflow, and what the version it becomes records of it."""

    folder: Path
    tracking_uri: str
    tags: dict[str, str]


def mlflow_package() -> ModuleType:
    """MLflow's package, or :class:`MissingRuntime` naming the extra that installs it."""
    try:
        import mlflow
    except ImportError as err:
        if err.name != "mlflow":
            raise
        raise MissingRuntime("MLflow", "mlflow-skinny", "mlflow") from None
    return mlflow


def check(source: str) -> None:
    """Refuse (:class:`InvalidName`) a URI that is no ``models:/`` or ``runs:/`` URI."""
    found = _MODEL.fullmatch(source) or _RUN.fullmatch(source)
    if found is None or ".." in source.split("/"):
        raise InvalidName("MLflow model URI", source, _RULE)


def fetch(source: str, tracking_uri: str | None, into: Path) -> Fetched:
    """The model ``source`` names at ``tracking_uri`` (MLflow's default when ``None``:
    ``MLFLOW_TRACKING_URI``, else its local store), downloaded into ``into``."""
    check(source)
    ml = mlflow_package()
    uri = tracking_uri or ml.get_tracking_uri()
    database = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if uri.startswith("sqlite:///") and ":memory:" not in uri and not Path(database).is_file():
        # MLflow would make a new, empty database there (its folders too): a typo would
        # leave files behind and then find no model.
        raise SourceNotFound(source, f"there is no MLflow database at {database}", uri)
    lookup = _Lookup(ml, source, uri)
    tags = {"mlflow.source": source, "mlflow.tracking_uri": without_credentials(uri)}
    model = _MODEL.fullmatch(source)
    if model is not None:
        name = model["name"]
        version = lookup.version(name, model["version"], model["alias"])
        tags |= {"mlflow.model_name": name, "mlflow.model_version": str(version.version)}
        if version.run_id:
            tags["mlflow.run_id"] = str(version.run_id)
        artifacts = f"models:/{name}/{version.version}"  # the version an alias means now
    else:
        run = _RUN.fullmatch(source)
        assert run is not None
        lookup.run(run["run"])
        tags["mlflow.run_id"] = run["run"]
        artifacts = source
    return Fetched(lookup.download(artifacts, into), uri, tags)


class _Lookup:
    """MLflow's client for one source, its errors turned into mmserve's: what it does not
    have is :class:`SourceNotFound` naming it; any other failure :class:`SourceUnavailable`."""

    def __init__(self, ml: ModuleType, source: str, uri: str) -> None:
        from mlflow.exceptions import MlflowException

        self.ml, self.source, self.uri = ml, source, uri
        self.client = ml.MlflowClient(tracking_uri=uri)
        self.error = MlflowException

    def version(self, name: str, number: str | None, alias: str | None) -> Any:
        """The registry's model version ``number`` or ``alias`` of ``name``."""
        if alias is not None:
            found = self._ask(lambda: self.client.get_model_version_by_alias(name, alias))
            missing = f"MLflow model {name!r} has no alias {alias!r}"
        else:
            found = self._ask(lambda: self.client.get_model_version(name, number))
            missing = f"MLflow model {name!r} has no version {number}"
        if found is not None:
            return found
        if self._ask(lambda: self.client.get_registered_model(name)) is None:
            missing = f"MLflow has no registered model {name!r}"
        raise SourceNotFound(self.source, missing, self.uri)

    def run(self, run_id: str) -> None:
        if self._ask(lambda: self.client.get_run(run_id)) is None:
            raise SourceNotFound(self.source, f"MLflow has no run {run_id!r}", self.uri)

    def download(self, artifacts: str, into: Path) -> Path:
        """The local copy of the files at ``artifacts``, made under ``into``."""
        import mlflow.artifacts

        local = self._ask(
            lambda: mlflow.artifacts.download_artifacts(
                artifact_uri=artifacts, dst_path=str(into), tracking_uri=self.uri
            )
        )
        if local is None:
            missing = f"MLflow has no artifacts at {artifacts!r}"
            raise SourceNotFound(self.source, missing, self.uri)
        return Path(local)

    def _ask(self, call: Callable[[], T]) -> T | None:
        """``call()``; ``None`` when MLflow says it has no such thing."""
        try:
            return call()
        except self.error as err:
            if err.error_code in _MISSING:
                return None
            raise SourceUnavailable(self.uri, err.message) from None
        except Exception as err:  # a store's own client failing (HTTP, S3, a database)
            raise SourceUnavailable(self.uri, f"{type(err).__name__}: {err}") from None
